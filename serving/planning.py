"""The planning use-cases: a series' forecast, and the replicas a service needs from it.

``POST /v1/forecast``, ``POST /v1/recommendations`` and the KEDA endpoint (which reads the
demand from Prometheus) call these with pandas histories. The forecaster regrids a history
onto its trained step, so a history must be short enough, and dense enough, for that grid
to be worth computing: the limits below refuse the rest with a 413.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from features.series import infer_step
from models.bundle import DetectorBundle, SeriesForecast
from models.capacity import ReplicaPlan, ScalingPolicy, ScheduledEvent, plan_replicas
from serving.problems import PayloadTooLargeError

#: A history's regular grid may hold this many times the points a request may send.
GRID_FACTOR = 10


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """A service's replica plan and the forecast it came from."""

    forecast: SeriesForecast
    plan: ReplicaPlan


def forecast_series(bundle: DetectorBundle, service: str, metric: str, horizon: int,
                    history: pd.Series | None, *, max_points: int) -> SeriesForecast:
    """The bundle's forecast of one series, from ``history`` if given (else its training data).

    Raises
    ------
    PayloadTooLargeError
        ``history`` holds more than ``max_points`` points, or spans a grid of more than
        ``GRID_FACTOR × max_points`` steps.
    ValueError
        The forecast cannot be made (the message names the series).
    """
    if history is not None:
        if len(history) > max_points:
            raise PayloadTooLargeError(
                f"history has {len(history)} points; at most {max_points}")
        _check_grid(bundle, service, metric, history, max_points)
    try:
        return bundle.forecast(service, metric, horizon, history)
    except pd.errors.OutOfBoundsDatetime:
        start = "the training data" if history is None else history.index[-1].isoformat()
        raise ValueError(f"{service}/{metric}: horizon={horizon} steps after {start} run past "
                         f"{pd.Timestamp.max:%Y-%m-%d}, the last timestamp supported; ask for "
                         "fewer steps") from None
    except ValueError as error:
        raise ValueError(f"{service}/{metric}: {error}") from error


def recommend(bundle: DetectorBundle, service: str, metric: str, horizon: int,
              history: pd.Series | None, policy: ScalingPolicy, current_replicas: int,
              events: Sequence[ScheduledEvent] = (), *, max_points: int) -> Recommendation:
    """Replicas to run now and over ``horizon`` steps, from the forecast of ``metric``."""
    forecast = forecast_series(bundle, service, metric, horizon, history,
                               max_points=max_points)
    return Recommendation(forecast, plan_replicas(forecast.frame, policy, current_replicas,
                                                  list(events)))


def _check_grid(bundle: DetectorBundle, service: str, metric: str, values: pd.Series,
                max_points: int) -> None:
    """Refuse a history whose regular grid (forecasters regrid it) would be mostly gaps.

    The grid has a step every trained step (or the history's median spacing) from the first
    timestamp to the last.
    """
    if len(values) < 2:
        return
    step = bundle.trained_step(service, metric) or infer_step(values.index)
    steps = int((values.index[-1] - values.index[0]) / step) + 1
    limit = GRID_FACTOR * max_points
    if steps > limit:
        raise PayloadTooLargeError(
            f"{service}/{metric}: history spans {steps:,} steps of {step.total_seconds():g} s for "
            f"{len(values)} points; at most {limit:,} (10 × the points a series may have): "
            "send the recent past, evenly spaced")
