"""``aiops train``: fit detectors for a dataset, evaluate them, track and register in MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from importlib import metadata
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import features
import models
from features.schema import METRIC, SERVICE, TIMESTAMP, VALUE
from features.series import SeriesKey, split_series, to_labels, to_series
from features.store import read_dataset
from models.base import ModelFormatError
from models.bundle import DetectorBundle
from registry.bundles import ModelRef, load_bundle
from training.fleet import fit_fleet
from training.holdout import (
    _fit_and_measure,
    _fit_correlations,
    _fit_final_forecasters,
    _Holdout,
    _measure_on_holdout,
    evaluate,
    forecast_holdout,
    holdout_metrics,
)
from training.options import TrainOptions, TrainResult
from training.plots import log_plots
from training.promotion import GateDecision, gate, set_champion
from training.runs import tracked_run
from training.tracking import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    configure_tracking,
    ensure_experiment,
)

__all__ = ["MIN_UNSEEN_SHARE", "TrainOptions", "TrainResult", "evaluate", "forecast_holdout",
           "holdout_metrics", "train"]

_log = logging.getLogger(__name__)
_PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def _pip_requirements(bundle: DetectorBundle) -> list[str]:
    """What the logged pyfunc needs to import the bundled ``features`` and ``models`` code."""
    names = ["numpy", "pandas", "scipy", "pyarrow", "mlflow", "scikit-learn", "statsmodels",
             "skops", "threadpoolctl"]
    if any(cls.requires_torch for cls in bundle.model_classes()):
        names.append("torch")  # the LSTM modules import torch only when a network is used
    # A local build tag such as "+cpu" is not on the package index: pin the release only.
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def _input_example(series: dict[SeriesKey, pd.Series]) -> pd.DataFrame:
    (service, metric), values = next(iter(series.items()))
    tail = values.dropna().iloc[-30:]
    return pd.DataFrame(
        {TIMESTAMP: tail.index.strftime("%Y-%m-%dT%H:%M:%SZ"), SERVICE: service, METRIC: metric,
         VALUE: tail.to_numpy()}
    )


def _log_dataset(frame: pd.DataFrame, path: Path) -> None:
    """The training data as an MLflow dataset input: source, digest, schema, row count."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "source can be interpreted in multiple ways"
        dataset = mlflow.data.from_pandas(frame, source=Path(path).resolve().as_uri(),
                                          name=Path(path).name)
    mlflow.log_input(dataset, context="training")


def train(options: TrainOptions) -> TrainResult:
    """Fit, evaluate, log, register, and promote if the gate allows; see ``training``."""
    started = time.perf_counter()
    tracking_uri = configure_tracking()
    experiment_id = ensure_experiment(options.experiment)

    frame = read_dataset(options.data, start=options.start, end=options.end)
    if frame.empty:
        window = (f" between {options.start} and {options.end}"
                  if options.start or options.end else "")
        raise ValueError(f"dataset {options.data} holds no rows{window}")
    series = {key: to_series(rows) for key, rows in split_series(frame)}
    labels = {key: to_labels(rows) for key, rows in split_series(frame)}
    labels = {k: v for k, v in labels.items() if v is not None}
    _log.info("read %d rows in %d series from %s", len(frame), len(series), options.data)

    with tracked_run(experiment_id, run_id=options.run_id, run_name=options.run_name) as run:
        mlflow.set_tags({"status.stage": "training", **options.tags})
        mlflow.log_params(
            {
                "data": str(Path(options.data).resolve()),
                "detectors": ",".join(options.detectors),
                "detector_configs": json.dumps(options.detector_configs, sort_keys=True),
                "holdout_fraction": options.holdout_fraction,
                "forecast_horizon": options.forecast_horizon,
                "forecasters": ",".join(options.forecasters),
                "gate": json.dumps([dataclasses.asdict(r) for r in options.gate]),
                "n_series": len(series),
                "n_rows": len(frame),
                "time_start": str(frame[TIMESTAMP].min()),
                "time_end": str(frame[TIMESTAMP].max()),
            }
        )
        _log_dataset(frame, options.data)
        metrics: dict[str, float] = {}
        measured = None
        if options.holdout_fraction > 0:
            measured = _measure_on_holdout(series, labels, options)
            metrics.update(measured.metrics)

        fit_started = time.perf_counter()
        fitted, failures, partial = fit_fleet(series, options.series_detectors,
                                              options.detector_configs, progress=options.progress)
        if not fitted:
            raise ValueError(
                f"no series of {options.data} could be trained ({len(failures)} tried); "
                f"{next(iter(failures.values()), 'none')}"
            )
        services = _fit_correlations(series, options) if options.use_correlation else {}
        metrics["n_services_correlated"] = float(len(services))
        forecasters = _fit_final_forecasters(
            {k: v for k, v in series.items() if k in fitted}, options, measured, metrics)
        metrics["fit_seconds"] = time.perf_counter() - fit_started
        metrics["n_series_fitted"] = float(len(fitted))
        metrics["n_series_failed"] = float(len(failures))
        metrics["n_series_partial"] = float(len(partial))
        mlflow.log_metrics(metrics)
        if failures:
            mlflow.log_dict({f"{k[0]}/{k[1]}": v for k, v in failures.items()}, "failures.json")
        if partial:
            mlflow.log_dict({f"{k[0]}/{k[1]}": v for k, v in partial.items()}, "partial.json")

        bundle = DetectorBundle(
            fitted,
            metadata={"run_id": run.info.run_id, "data": str(options.data),
                      "detectors": list(options.detectors)},
            service_detectors=services,
            forecasters=forecasters,
        )
        if measured is not None:
            log_plots(measured.bundle, measured.train_part, measured.holdout, measured.labels,
                      options.forecast_horizon)
        version = _register(bundle, series, options)
        mlflow.set_tags({"registered_version": version, "status.stage": "gating"})
        decision = _gate(version, options, measured)
        mlflow.set_tags({"promotion": "promoted to champion" if decision.promote
                         else "registered as challenger only",
                         "promotion.decision": "promote" if decision.promote else "keep",
                         "promotion.reason": decision.reason[:4000],
                         "promotion.compared": json.dumps(decision.compared)[:4000],
                         "status.stage": "done"})
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        _log.info("run %s registered %s version %s; %s (%s)", run.info.run_id,
                  options.model_name, version, decision.reason, tracking_uri)
    return TrainResult(
        run_id=run.info.run_id,
        model_name=options.model_name,
        version=version,
        champion=decision.promote,
        metrics=metrics,
        failures={f"{k[0]}/{k[1]}": v for k, v in failures.items()},
        decision=decision.reason,
        partial={f"{k[0]}/{k[1]}": v for k, v in partial.items()},
    )


def _register(bundle: DetectorBundle, series: dict[SeriesKey, pd.Series],
              options: TrainOptions) -> str:
    """Log the bundle as a pyfunc, register it and point ``challenger`` at it."""
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
            pip_requirements=_pip_requirements(bundle),
            registered_model_name=options.model_name,
        )
    version = str(model_info.registered_model_version)
    MlflowClient().set_registered_model_alias(options.model_name, CHALLENGER, version)
    return version


def _gate(version: str, options: TrainOptions, measured: _Holdout | None) -> GateDecision:
    """Promote ``version`` if it is at least as good as the champion on data neither has seen.

    The challenger is measured as fitted on this run's training split. When enough of
    the holdout comes after the champion's training data ended, the champion as served
    is measured on those points; otherwise the champion's configuration, refitted on
    the same training split, is measured on the whole holdout (see :func:`_compare`).
    """
    champion_version = alias_version(options.model_name, CHAMPION)
    if champion_version is None:
        decision = gate({}, None, options.gate)
    elif measured is None:
        decision = GateDecision(False, "no holdout (holdout_fraction=0): nothing to compare the "
                                "challenger with the champion on; promote by hand", {})
    else:
        try:
            with tempfile.TemporaryDirectory() as cache:
                _, champion = load_bundle(ModelRef(
                    tracking_uri=mlflow.get_tracking_uri(), name=options.model_name,
                    alias=CHAMPION, cache_dir=Path(cache)))
        except (LookupError, MlflowException, OSError, ModelFormatError) as error:
            decision = GateDecision(False, f"the champion (version {champion_version}) could "
                                    f"not be loaded to compare with: {error}", {})
        else:
            decision = _compare(champion, champion_version, measured, options)
    if decision.promote:
        set_champion(options.model_name, version, action="gate", reason=decision.reason,
                     by=f"run {mlflow.active_run().info.run_id}")
    return decision


#: The share of the holdout that must come after the champion's training end to measure the
#: champion as served on it; with less, its configuration is refitted on the training split.
MIN_UNSEEN_SHARE = 0.1


def _compare(champion: DetectorBundle, champion_version: str, measured: _Holdout,
             options: TrainOptions) -> GateDecision:
    """Gate the challenger against the champion on points neither was fitted on.

    Comparing with the champion on points it was trained on favours it: a retrain on
    a little more data than the champion had would never win. So either the champion
    is measured on the holdout points after its own training data (when at least
    :data:`MIN_UNSEEN_SHARE` of the holdout is there), or its configuration is fitted
    on the challenger's training split and both are measured on the whole holdout.
    A champion of the challenger's own configuration, fitted on that split, is the
    challenger's held-out model: the challenger, the same on more data, passes.
    """
    params = _run_params(options.model_name, champion_version)
    seen_until = _timestamp(params.get("time_end"))
    n_holdout = sum(len(v) for v in measured.holdout.values())
    unseen = ({k: v[v.index > seen_until] for k, v in measured.holdout.items()}
              if seen_until is not None else {})
    if sum(len(v) for v in unseen.values()) >= MIN_UNSEEN_SHARE * max(n_holdout, 1):
        window = {k: v for k, v in unseen.items() if len(v)}
        prefix = {k: pd.concat([measured.train_part[k], v[v.index <= seen_until]])
                  for k, v in measured.holdout.items() if k in window}
        labels = {k: v.reindex(window[k].index, fill_value=False)
                  for k, v in measured.labels.items() if k in window}
        note = (f"champion version {champion_version} as served, on the holdout after "
                f"{seen_until.isoformat()}, which it has not seen")
        mine = holdout_metrics(measured.bundle, prefix, window, labels, options.forecast_horizon)
        theirs = holdout_metrics(champion, prefix, window, labels, options.forecast_horizon)
    else:
        configuration = _configuration(params, options)
        if configuration is None:
            note = (f"champion version {champion_version} on the whole holdout, which it was "
                    f"trained on (its run records no configuration to refit): the comparison "
                    f"favours the champion")
            mine = measured.metrics
            theirs = holdout_metrics(champion, measured.train_part, measured.holdout,
                                     measured.labels, options.forecast_horizon)
        elif _same_configuration(configuration, options):
            note = (f"the configuration of champion version {champion_version}, which is the "
                    f"challenger's: fitted on this run's training split it is the challenger's "
                    f"held-out model, measured on the holdout neither has seen")
            mine = theirs = measured.metrics
        else:
            note = (f"the configuration of champion version {champion_version} refitted on "
                    f"this run's training split, on the holdout neither has seen")
            mine = measured.metrics
            theirs = _fit_and_measure(measured.train_part, measured.holdout, measured.labels,
                                      configuration, log=False).metrics
    mlflow.log_dict({"window": note, "challenger": mine, "champion": theirs},
                    "promotion_comparison.json")
    decision = gate(mine, theirs, options.gate)
    return dataclasses.replace(decision, reason=f"vs {note}: {decision.reason}")


def _configuration(params: dict[str, str], options: TrainOptions) -> TrainOptions | None:
    """The champion's models as its run recorded them, fitted as the challenger's are.

    The forecast horizon stays the challenger's, so that both are backtested and
    measured at the same horizon. None when the run did not record them.
    """
    try:
        detectors = tuple(params["detectors"].split(","))
        forecasters = tuple(params["forecasters"].split(","))
        configs = json.loads(params["detector_configs"])
        return dataclasses.replace(options, detectors=detectors, forecasters=forecasters,
                                   detector_configs=configs)
    except (KeyError, ValueError, TypeError):
        return None


def _same_configuration(champion: TrainOptions, challenger: TrainOptions) -> bool:
    return (champion.detectors == challenger.detectors
            and champion.forecasters == challenger.forecasters
            and json.dumps(champion.detector_configs, sort_keys=True)
            == json.dumps(challenger.detector_configs, sort_keys=True))


def _run_params(model_name: str, version: str) -> dict[str, str]:
    """The parameters of the run that trained ``version`` ({} if they cannot be read)."""
    try:
        run_id = MlflowClient().get_model_version(model_name, version).run_id
        return dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException:
        return {}


def _timestamp(text: str | None) -> pd.Timestamp | None:
    try:
        return pd.Timestamp(text) if text else None
    except ValueError:
        return None


def _example_output(bundle: DetectorBundle, example: pd.DataFrame) -> pd.DataFrame:
    from training.pyfunc_model import DetectorBundleModel

    model = DetectorBundleModel()
    model.bundle = bundle
    return model.predict(None, example)
