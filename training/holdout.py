"""Measuring a run's models on data they were not fitted on: the holdout.

A run fits its models on each series' earlier part and measures them on the
rest (:func:`holdout_metrics`: event scores, :func:`evaluate`, and forecast
accuracy, :func:`forecast_holdout`) before it fits them again on everything.
The forecasters chosen by backtest on the earlier part are the ones refitted
on everything (:func:`_fit_final_forecasters`), so that choice and its
backtest summaries live here too.

Apart from :mod:`training.train` because the champion–challenger comparison
(:mod:`training.comparison`) measures the champion with the same functions, on
the same points, and refits the champion's configuration the same way; the
job and the comparison both import this module, and it imports neither.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.series import SeriesKey
from models.alarms import AlarmPolicy, find_incidents
from models.backtest import mase_scale, origin_errors, origins
from models.bundle import DetectorBundle
from models.correlation import CorrelationDetector, CorrelationDetectorConfig
from models.evaluation import EventScores, event_scores
from models.forecast import regular_grid
from training.fleet import fit_fleet, fit_forecasters, fit_services, refit_forecasters
from training.options import TrainOptions


def holdout_metrics(
    bundle: DetectorBundle,
    train_part: dict[SeriesKey, pd.Series],
    holdout: dict[SeriesKey, pd.Series],
    labels: dict[SeriesKey, pd.Series],
    forecast_horizon: int,
) -> dict[str, float]:
    """What a bundle achieves on held-out data: event scores and forecast accuracy.

    The same function measures the challenger (fitted on ``train_part``) and
    the champion, so the promotion gate compares the two on the same points.
    Names start with ``holdout.``.
    """
    metrics = evaluate(bundle, holdout, labels)
    if forecast_horizon:
        metrics.update(forecast_holdout(bundle, train_part, holdout, forecast_horizon))
    return {f"holdout.{k}": v for k, v in metrics.items()}


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


def forecast_holdout(
    bundle: DetectorBundle,
    train_part: dict[SeriesKey, pd.Series],
    holdout: dict[SeriesKey, pd.Series],
    horizon: int,
    n_origins: int = 3,
) -> dict[str, float]:
    """Mean MASE and [q10, q90] coverage of the bundle's forecasts over the holdout.

    Each series is forecast from ``n_origins`` origins in its holdout, from the
    history up to the origin; MASE is scaled by the seasonal naive rule's
    in-sample error on the training part, as in the backtest.
    """
    mases, coverages = [], []
    for key, future in holdout.items():
        forecaster = bundle.forecasters.get(key)
        if forecaster is None or key not in train_part or not len(future):
            continue
        steps = min(horizon, forecaster.config.max_horizon, len(future))
        grid = regular_grid(pd.concat([train_part[key], future]), forecaster.step_)
        cut = int((grid.index <= train_part[key].index[-1]).sum())
        error, inside = origin_errors(forecaster, grid,
                                      origins(len(grid), steps, n_origins, cut), steps)
        if error.size:
            mases.append(float(error.mean() / mase_scale(train_part[key],
                                                         forecaster.period_steps)))
            coverages.append(float(inside.mean()))
    if not mases:
        return {}
    return {"forecast.mase_mean": float(np.mean(mases)),
            "forecast.coverage_mean": float(np.mean(coverages)),
            "forecast.n_series": float(len(mases))}


@dataclasses.dataclass(frozen=True)
class _Holdout:
    """The models fitted on the training part, and what they achieve on the holdout."""

    bundle: DetectorBundle
    selections: dict
    train_part: dict[SeriesKey, pd.Series]
    holdout: dict[SeriesKey, pd.Series]
    labels: dict[SeriesKey, pd.Series]
    metrics: dict[str, float]


def _measure_on_holdout(series: dict[SeriesKey, pd.Series], labels: dict[SeriesKey, pd.Series],
                        options: TrainOptions) -> _Holdout:
    cut = {k: int(len(v) * (1 - options.holdout_fraction)) for k, v in series.items()}
    train_part = {k: v.iloc[: cut[k]] for k, v in series.items()}
    holdout = {k: v.iloc[cut[k]:] for k, v in series.items()}
    holdout_labels = {k: v.iloc[cut[k]:] for k, v in labels.items()}
    return _fit_and_measure(train_part, holdout, holdout_labels, options)


def _fit_and_measure(train_part: dict[SeriesKey, pd.Series], holdout: dict[SeriesKey, pd.Series],
                     labels: dict[SeriesKey, pd.Series], options: TrainOptions,
                     log: bool = True) -> _Holdout:
    """Fit ``options``' models on ``train_part`` and measure them on ``holdout``.

    ``log`` records the forecasters' backtest in the active run (not for the
    champion's configuration refitted by the gate).
    """
    fitted, _, _ = fit_fleet(train_part, options.series_detectors, options.detector_configs,
                             progress=options.progress, report=False)
    services = _fit_correlations(train_part, options) if options.use_correlation else {}
    selections: dict = {}
    metrics: dict[str, float] = {}
    if options.forecast_horizon:
        selections, forecast_failures = fit_forecasters(
            {k: v for k, v in train_part.items() if k in fitted}, options.forecast_horizon,
            options.forecasters, progress=options.progress)
        metrics.update(_forecast_metrics(selections, forecast_failures))
        if log:
            mlflow.log_dict(_backtest_table(selections, forecast_failures),
                            "forecast_backtest.json")
    bundle = DetectorBundle(fitted, service_detectors=services,
                            forecasters={k: s.forecaster for k, s in selections.items()})
    metrics.update(holdout_metrics(bundle, train_part, holdout, labels,
                                   options.forecast_horizon))
    return _Holdout(bundle, selections, train_part, holdout, labels, metrics)


def _fit_final_forecasters(series: dict[SeriesKey, pd.Series], options: TrainOptions,
                           measured: _Holdout | None, metrics: dict[str, float]) -> dict:
    """Forecasters on all the data: the ones chosen on the training part, refitted.

    Without a holdout the choice is made here, by backtest on all the data.
    """
    if not options.forecast_horizon:
        return {}
    if measured is not None and measured.selections:
        chosen = {k: sel.forecaster for k, sel in measured.selections.items() if k in series}
        refitted, failures = refit_forecasters({k: series[k] for k in chosen}, chosen,
                                               progress=options.progress)
        metrics["forecast.n_refit_failed"] = float(len(failures))
        return refitted
    selections, forecast_failures = fit_forecasters(series, options.forecast_horizon,
                                                    options.forecasters, progress=options.progress)
    metrics.update(_forecast_metrics(selections, forecast_failures))
    mlflow.log_dict(_backtest_table(selections, forecast_failures), "forecast_backtest.json")
    return {k: sel.forecaster for k, sel in selections.items()}


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


def _forecast_metrics(selections: dict, failures: dict) -> dict[str, float]:
    """Backtest MASE and 80 % interval coverage of the chosen forecasters, and what was chosen."""
    chosen = [sel.scores[sel.forecaster.name] for sel in selections.values()
              if sel.forecaster.name in sel.scores]
    metrics = {"forecast.n_series": float(len(selections)),
               "forecast.n_failed": float(len(failures))}
    if chosen:
        metrics["forecast.mase_mean"] = float(np.mean([s.mase for s in chosen]))
        metrics["forecast.coverage_mean"] = float(np.mean([s.coverage for s in chosen]))
    names = sorted({n for sel in selections.values() for n in sel.scores})
    for name in names:
        scores = [sel.scores[name] for sel in selections.values() if name in sel.scores]
        metrics[f"forecast.backtest.{name}.mase_mean"] = float(np.mean([s.mase for s in scores]))
        metrics[f"forecast.backtest.{name}.coverage_mean"] = float(
            np.mean([s.coverage for s in scores]))
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
