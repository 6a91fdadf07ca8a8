"""``aiops train``: fit detectors for a dataset, evaluate them, track and register in MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import features
import models
from features.schema import METRIC, SERVICE, TIMESTAMP, VALUE
from features.series import SeriesKey, split_series, to_labels, to_series
from features.store import read_dataset
from models.alarms import AlarmPolicy, find_incidents
from models.bundle import DEFAULT_DETECTORS, DetectorBundle
from models.correlation import CorrelationDetector, CorrelationDetectorConfig
from models.evaluation import EventScores, event_scores
from training.fleet import fit_fleet, fit_forecasters, fit_services
from training.tracking import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    alias_version,
    configure_tracking,
    ensure_experiment,
)

_log = logging.getLogger(__name__)
_PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """What ``aiops train`` does.

    ``holdout_fraction`` of each series' most recent points is held out to
    measure the detectors before the final fit on all of the data; 0 skips
    the measurement.
    """

    data: Path
    detectors: tuple[str, ...] = (*DEFAULT_DETECTORS, CorrelationDetector.name)
    detector_configs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    holdout_fraction: float = 0.2
    model_name: str = DEFAULT_MODEL_NAME
    experiment: str = DEFAULT_EXPERIMENT
    progress: bool = True
    #: Steps ahead the forecasters are backtested on and serve at most; 0 trains none.
    forecast_horizon: int = 288

    def __post_init__(self) -> None:
        if not 0 <= self.forecast_horizon <= 100_000:
            raise ValueError(f"forecast_horizon={self.forecast_horizon} must lie in [0, 100000]")
        if not 0.0 <= self.holdout_fraction < 0.9:
            raise ValueError(f"holdout_fraction={self.holdout_fraction} must lie in [0, 0.9)")
        if not self.detectors:
            raise ValueError("detectors is empty; name at least one, e.g. dynamic_threshold")
        known = [*models.registered_names(), CorrelationDetector.name]
        unknown = [d for d in self.detectors if d not in known]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(known)}")

    @property
    def use_correlation(self) -> bool:
        return CorrelationDetector.name in self.detectors

    @property
    def series_detectors(self) -> tuple[str, ...]:
        """The per-series detectors (everything but the per-service correlation)."""
        return tuple(d for d in self.detectors if d != CorrelationDetector.name)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    version: str
    champion: bool
    metrics: dict[str, float]
    failures: dict[str, str]


def evaluate(
    bundle: DetectorBundle,
    holdout: dict[SeriesKey, pd.Series],
    labels: dict[SeriesKey, pd.Series],
) -> dict[str, float]:
    """Event-level precision, recall and F1 of each detector and the combined score.

    Alarms are what the service pages under the default alarm policy: the
    span of every confirmed incident. The correlation detector is measured on
    the metrics it models, against the same labels.
    """
    totals: dict[str, EventScores] = {}
    policy = AlarmPolicy()

    def add(name: str, truth: np.ndarray, scores: np.ndarray, index: pd.DatetimeIndex,
            metric: str) -> None:
        alarms = np.zeros(len(index), dtype=bool)
        for incident in find_incidents(index, scores, metric, policy):
            alarms[(index >= incident.start) & (index <= incident.end)] = True
        found = event_scores(truth, alarms)
        totals[name] = totals[name] + found if name in totals else found

    for key, window in holdout.items():
        if key not in bundle or key not in labels:
            continue
        result = bundle.score(key[0], key[1], window)
        for name, scores in {**result.detector_scores, "combined": result.score}.items():
            add(name, labels[key].to_numpy(), scores, window.index, key[1])
    for service, detector in bundle.service_detectors.items():
        keys = [k for k in holdout if k[0] == service]
        wide = pd.concat({k[1]: holdout[k] for k in keys}, axis=1)
        for metric, scores in detector.score(wide).items():
            truth = labels.get((service, metric))
            if truth is not None:
                add(CorrelationDetector.name, truth.reindex(wide.index, fill_value=False)
                    .to_numpy(dtype=bool), scores.to_numpy(), wide.index, metric)
    metrics = {}
    for name, total in totals.items():
        metrics[f"{name}.event_precision"] = total.precision
        metrics[f"{name}.event_recall"] = total.recall
        metrics[f"{name}.event_f1"] = total.f1
        metrics[f"{name}.n_events"] = float(total.n_events)
    return {k: float(v) for k, v in metrics.items() if not np.isnan(v)}


def _fit_correlations(
    series: dict[SeriesKey, pd.Series], options: TrainOptions
) -> dict[str, CorrelationDetector]:
    """One correlation detector per service, fitted on the service's metrics side by side."""
    by_service: dict[str, dict[str, pd.Series]] = {}
    for (service, metric), values in series.items():
        by_service.setdefault(service, {})[metric] = values
    wide = {service: pd.concat(metrics, axis=1) for service, metrics in by_service.items()}
    config = CorrelationDetectorConfig.from_dict(
        options.detector_configs.get(CorrelationDetector.name, {})
    )
    fitted, _ = fit_services(wide, config, progress=options.progress)
    return fitted


def _pip_requirements(detectors: tuple[str, ...]) -> list[str]:
    """What the logged pyfunc needs to import the bundled ``features`` and ``models`` code."""
    names = ["numpy", "pandas", "scipy", "pyarrow", "mlflow", "scikit-learn", "statsmodels",
             "skops", "threadpoolctl"]
    if "lstm" in detectors:
        names.append("torch")  # models.lstm imports torch only when a network is used
    # A local build tag such as "+cpu" is not on the package index: pin the release only.
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def _input_example(series: dict[SeriesKey, pd.Series]) -> pd.DataFrame:
    (service, metric), values = next(iter(series.items()))
    tail = values.dropna().iloc[-30:]
    return pd.DataFrame(
        {TIMESTAMP: tail.index.strftime("%Y-%m-%dT%H:%M:%SZ"), SERVICE: service, METRIC: metric,
         VALUE: tail.to_numpy()}
    )


def _forecast_metrics(selections: dict, failures: dict) -> dict[str, float]:
    """Backtest MASE and 80 % interval coverage of the chosen forecasters, and what was chosen."""
    chosen = [sel.scores[sel.forecaster.name] for sel in selections.values()
              if sel.forecaster.name in sel.scores]
    metrics = {"forecast.n_series": float(len(selections)),
               "forecast.n_failed": float(len(failures))}
    if chosen:
        metrics["forecast.mase_mean"] = float(np.mean([s.mase for s in chosen]))
        metrics["forecast.coverage_mean"] = float(np.mean([s.coverage for s in chosen]))
    naive = [sel.scores["seasonal_naive"].mase for sel in selections.values()
             if "seasonal_naive" in sel.scores]
    if naive:
        metrics["forecast.seasonal_naive_mase_mean"] = float(np.mean(naive))
    for sel in selections.values():
        key = f"forecast.chosen.{sel.forecaster.name}"
        metrics[key] = metrics.get(key, 0.0) + 1.0
    return metrics


def _backtest_table(selections: dict, failures: dict) -> dict[str, Any]:
    return {
        "series": {
            f"{k[0]}/{k[1]}": {"chosen": sel.forecaster.name, "reason": sel.reason,
                               "backtest": {n: dataclasses.asdict(s) for n, s in sel.scores.items()}}
            for k, sel in selections.items()
        },
        "failures": {f"{k[0]}/{k[1]}": v for k, v in failures.items()},
    }


def train(options: TrainOptions) -> TrainResult:
    """Fit, evaluate, log and register; see the module docstring of ``training``."""
    started = time.perf_counter()
    tracking_uri = configure_tracking()
    experiment_id = ensure_experiment(options.experiment)

    frame = read_dataset(options.data)
    if frame.empty:
        raise ValueError(f"dataset {options.data} holds no rows")
    series = {key: to_series(rows) for key, rows in split_series(frame)}
    labels = {key: to_labels(rows) for key, rows in split_series(frame)}
    labels = {k: v for k, v in labels.items() if v is not None}
    _log.info("read %d rows in %d series from %s", len(frame), len(series), options.data)

    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(
            {
                "data": str(Path(options.data).resolve()),
                "detectors": ",".join(options.detectors),
                "detector_configs": json.dumps(options.detector_configs, sort_keys=True),
                "holdout_fraction": options.holdout_fraction,
                "forecast_horizon": options.forecast_horizon,
                "n_series": len(series),
                "n_rows": len(frame),
                "time_start": str(frame[TIMESTAMP].min()),
                "time_end": str(frame[TIMESTAMP].max()),
            }
        )
        metrics: dict[str, float] = {}
        if options.holdout_fraction > 0:
            cut = {k: int(len(v) * (1 - options.holdout_fraction)) for k, v in series.items()}
            train_part = {k: v.iloc[: cut[k]] for k, v in series.items()}
            fitted, _ = fit_fleet(train_part, options.series_detectors,
                                  options.detector_configs, progress=options.progress)
            services = _fit_correlations(train_part, options) if options.use_correlation else {}
            holdout = {k: v.iloc[cut[k]:] for k, v in series.items()}
            holdout_labels = {k: v.iloc[cut[k]:] for k, v in labels.items()}
            metrics.update(evaluate(DetectorBundle(fitted, service_detectors=services), holdout,
                                    holdout_labels))

        fit_started = time.perf_counter()
        fitted, failures = fit_fleet(series, options.series_detectors,
                                     options.detector_configs, progress=options.progress)
        services = _fit_correlations(series, options) if options.use_correlation else {}
        metrics["n_services_correlated"] = float(len(services))
        forecasters: dict = {}
        if options.forecast_horizon:
            selections, forecast_failures = fit_forecasters(
                {k: v for k, v in series.items() if k in fitted}, options.forecast_horizon,
                progress=options.progress)
            forecasters = {k: sel.forecaster for k, sel in selections.items()}
            metrics.update(_forecast_metrics(selections, forecast_failures))
            mlflow.log_dict(_backtest_table(selections, forecast_failures), "forecast_backtest.json")
        if not fitted:
            raise ValueError(
                f"no series of {options.data} could be fitted; first failure: "
                f"{next(iter(failures.values()), 'none')}"
            )
        metrics["fit_seconds"] = time.perf_counter() - fit_started
        metrics["n_series_fitted"] = float(len(fitted))
        metrics["n_series_failed"] = float(len(failures))
        mlflow.log_metrics(metrics)
        if failures:
            mlflow.log_dict({f"{k[0]}/{k[1]}": v for k, v in failures.items()}, "failures.json")

        bundle = DetectorBundle(
            fitted,
            metadata={"run_id": run.info.run_id, "data": str(options.data),
                      "detectors": list(options.detectors)},
            service_detectors=services,
            forecasters=forecasters,
        )
        with tempfile.TemporaryDirectory() as scratch:
            bundle_dir = bundle.save(Path(scratch) / "bundle")
            example = _input_example(series)
            signature = infer_signature(example, _example_output(bundle, example))
            model_info = mlflow.pyfunc.log_model(
                name="detector_bundle",
                python_model=str(_PYFUNC_FILE),
                artifacts={"bundle": str(bundle_dir)},
                code_paths=[str(Path(features.__file__).parent), str(Path(models.__file__).parent)],
                signature=signature,
                input_example=example,
                pip_requirements=_pip_requirements(options.detectors),
                registered_model_name=options.model_name,
            )
        version = str(model_info.registered_model_version)
        client = MlflowClient()
        client.set_registered_model_alias(options.model_name, CHALLENGER, version)
        became_champion = alias_version(options.model_name, CHAMPION) is None
        if became_champion:
            client.set_registered_model_alias(options.model_name, CHAMPION, version)
            decision = "first version of the model: promoted to champion"
        else:
            decision = "a champion exists: registered as challenger only"
        mlflow.set_tags({"registered_version": version, "promotion": decision})
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        _log.info("run %s registered %s version %s (%s) in %s", run.info.run_id,
                  options.model_name, version, decision, tracking_uri)
    return TrainResult(
        run_id=run.info.run_id,
        model_name=options.model_name,
        version=version,
        champion=became_champion,
        metrics=metrics,
        failures={f"{k[0]}/{k[1]}": v for k, v in failures.items()},
    )


def _example_output(bundle: DetectorBundle, example: pd.DataFrame) -> pd.DataFrame:
    from training.pyfunc_model import DetectorBundleModel

    model = DetectorBundleModel()
    model.bundle = bundle
    return model.predict(None, example)
