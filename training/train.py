"""``aiops train``: fit detectors for a dataset, evaluate them, track and register in MLflow.

:func:`train` is the job's outline, step by step in one MLflow run; the steps
that have a life of their own are apart: what a run is asked for
(:mod:`training.options`), fitting on the training split and measuring on the
holdout (:mod:`training.holdout`), the logged and registered model
(:mod:`training.registration`) and the champion–challenger comparison
(:mod:`training.comparison`). The names other code imports from here stay
importable from here (:data:`__all__`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd

from features.schema import TIMESTAMP
from features.series import split_series, to_labels, to_series
from features.store import read_dataset
from models.bundle import DetectorBundle
from training.comparison import MIN_UNSEEN_SHARE, _gate
from training.fleet import fit_fleet
from training.holdout import (
    _fit_correlations,
    _fit_final_forecasters,
    _measure_on_holdout,
    evaluate,
    forecast_holdout,
    holdout_metrics,
)
from training.options import TrainOptions, TrainResult
from training.plots import log_plots
from training.registration import _register
from training.runs import tracked_run
from training.tracking import configure_tracking, ensure_experiment
from training.unlearnt import champion_paging, without

__all__ = ["MIN_UNSEEN_SHARE", "TrainOptions", "TrainResult", "evaluate", "forecast_holdout",
           "holdout_metrics", "train"]

_log = logging.getLogger(__name__)


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
        left_out = {}
        if options.alarm_policy is not None:
            at = options.end or frame[TIMESTAMP].max() + pd.Timedelta(1, "ns")
            left_out = champion_paging(series, options.model_name, options.alarm_policy, at)
        fit_on = without(series, left_out)
        fitted, failures, partial = fit_fleet(fit_on, options.series_detectors,
                                              options.detector_configs, progress=options.progress)
        if not fitted:
            raise ValueError(
                f"no series of {options.data} could be trained ({len(failures)} tried); "
                f"{next(iter(failures.values()), 'none')}"
            )
        services = _fit_correlations(fit_on, options) if options.use_correlation else {}
        metrics["n_services_correlated"] = float(len(services))
        forecasters = _fit_final_forecasters(
            {k: v for k, v in series.items() if k in fitted}, options, measured, metrics)
        metrics["fit_seconds"] = time.perf_counter() - fit_started
        metrics["n_series_fitted"] = float(len(fitted))
        metrics["n_series_failed"] = float(len(failures))
        metrics["n_series_partial"] = float(len(partial))
        metrics["n_series_left_out"] = float(len(left_out))
        mlflow.log_metrics(metrics)
        if failures:
            mlflow.log_dict({f"{k[0]}/{k[1]}": v for k, v in failures.items()}, "failures.json")
        if partial:
            mlflow.log_dict({f"{k[0]}/{k[1]}": v for k, v in partial.items()}, "partial.json")
        if left_out:
            mlflow.log_dict({f"{k[0]}/{k[1]}": v.note() for k, v in left_out.items()},
                            "left_out.json")

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
