"""Fitting detectors for every series of a dataset, fanned out as Ray tasks.

A local Ray is started when none is running; ``RAY_ADDRESS`` attaches to a
cluster instead. Each task receives one series and returns its fitted
detectors (or its backtested forecaster), so a fleet of thousands of series spreads over every core.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import ray
from tqdm import tqdm

from features.series import SeriesKey
from models.backtest import DEFAULT_FORECASTERS, Selection, select_forecaster
from models.base import Detector, make_detector
from models.bundle import DEFAULT_DETECTORS, fit_series
from models.correlation import CorrelationDetector, CorrelationDetectorConfig
from models.forecast import Forecaster

_log = logging.getLogger(__name__)
#: Seconds between progress lines in the log while tasks run.
_LOG_EVERY_S = 30.0



def ensure_ray(num_cpus: int | None = None) -> None:
    """Start (or attach to) Ray once per process."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _log.info("attaching to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _gather(pending: list, desc: str, unit: str, progress: bool) -> list[tuple[Any, Any, str | None]]:
    """Wait for every task (``(key, result, error)`` triples), with a progress bar.

    Progress also goes to the log every ``_LOG_EVERY_S`` seconds, for runs without a terminal
    (the nightly job).
    """
    results, total = [], len(pending)
    started = last_logged = time.monotonic()
    with tqdm(total=total, desc=desc, unit=unit, disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=min(len(pending), 16), timeout=5.0)
            results.extend(ray.get(done))
            bar.update(len(done))
            now = time.monotonic()
            if now - last_logged >= _LOG_EVERY_S and pending:
                _log.info("%s: %d of %d %s done in %.0f s", desc, len(results), total, unit,
                          now - started)
                last_logged = now
    _log.info("%s: %d %s done in %.1f s", desc, total, unit, time.monotonic() - started)
    return results


@ray.remote
def _fit_series_task(key, history, detector_names, configs):
    try:
        return key, fit_series(history, detector_names, configs), None
    except (ValueError, TypeError) as error:
        # A series that cannot be fitted (too short, all NaN) is reported, not fatal.
        return key, None, f"{type(error).__name__}: {error}"


def fit_fleet(
    series: Mapping[SeriesKey, pd.Series],
    detector_names: Sequence[str] = DEFAULT_DETECTORS,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    progress: bool = True,
) -> tuple[dict[SeriesKey, dict[str, Detector]], dict[SeriesKey, str]]:
    """Fit detectors for every series in parallel.

    Returns
    -------
    fitted
        ``{(service, metric): {name: detector}}`` for the series that fitted.
    failures
        ``{(service, metric): reason}`` for those that did not.
    """
    for name in detector_names:
        make_detector(name, **dict((configs or {}).get(name, {})))  # fail fast on bad config
    ensure_ray()
    started = time.perf_counter()
    pending = [
        _fit_series_task.remote(key, history, list(detector_names), dict(configs or {}))
        for key, history in series.items()
    ]
    fitted, failures = {}, {}
    for key, detectors, error in _gather(pending, "fitting series", "series", progress):
        if error is None:
            fitted[key] = detectors
        else:
            failures[key] = error
            _log.warning("series %s/%s not fitted: %s", key[0], key[1], error)
    _log.info("fitted %d series in %.1fs (%d failed)", len(fitted), time.perf_counter() - started,
              len(failures))
    return fitted, failures


@ray.remote
def _fit_service_task(service, wide, config):
    try:
        return service, CorrelationDetector(config).fit(wide), None
    except (ValueError, TypeError) as error:
        return service, None, f"{type(error).__name__}: {error}"


def fit_services(
    services: Mapping[str, pd.DataFrame],
    config: CorrelationDetectorConfig | None = None,
    *,
    progress: bool = True,
) -> tuple[dict[str, CorrelationDetector], dict[str, str]]:
    """Fit a multi-metric correlation detector per service (wide frames), in parallel.

    Services with a single metric are skipped; a service where no metric is
    explained by its siblings is kept out of the result (nothing to score).
    """
    ensure_ray()
    pending = [
        _fit_service_task.remote(service, wide, config)
        for service, wide in services.items()
        if wide.shape[1] >= 2
    ]
    fitted, failures = {}, {}
    for service, detector, error in _gather(pending, "fitting services", "service", progress):
        if error is not None:
            failures[service] = error
            _log.warning("service %s: correlation not fitted: %s", service, error)
        elif detector.models_:
            fitted[service] = detector
    return fitted, failures


@ray.remote
def _select_forecaster_task(key, history, horizon, names):
    try:
        return key, select_forecaster(history, horizon, names), None
    except (ValueError, TypeError) as error:
        return key, None, f"{type(error).__name__}: {error}"


def fit_forecasters(
    series: Mapping[SeriesKey, pd.Series],
    horizon: int,
    names: Sequence[str] = DEFAULT_FORECASTERS,
    *,
    progress: bool = True,
) -> tuple[dict[SeriesKey, Selection], dict[SeriesKey, str]]:
    """Backtest ``names`` on every series and fit the best on all of it, in parallel."""
    ensure_ray()
    pending = [_select_forecaster_task.remote(key, history, horizon, list(names))
               for key, history in series.items()]
    selected, failures = {}, {}
    for key, selection, error in _gather(pending, "fitting forecasters", "series", progress):
        if error is None:
            selected[key] = selection
        else:
            failures[key] = error
            _log.warning("series %s/%s: no forecaster fitted: %s", key[0], key[1], error)
    return selected, failures


@ray.remote
def _refit_forecaster_task(key, history, forecaster):
    try:
        return key, type(forecaster)(forecaster.config).fit(history), None
    except (ValueError, TypeError) as error:
        return key, None, f"{type(error).__name__}: {error}"


def refit_forecasters(
    series: Mapping[SeriesKey, pd.Series],
    chosen: Mapping[SeriesKey, Forecaster],
    *,
    progress: bool = True,
) -> tuple[dict[SeriesKey, Forecaster], dict[SeriesKey, str]]:
    """Fit, on each series, a fresh forecaster of the kind and config chosen before, in parallel.

    A series whose refit fails keeps the forecaster it was chosen with (fitted on less
    data) and is reported.
    """
    ensure_ray()
    pending = [_refit_forecaster_task.remote(key, series[key], model)
               for key, model in chosen.items()]
    refitted, failures = {}, {}
    for key, model, error in _gather(pending, "refitting forecasters", "series", progress):
        if error is None:
            refitted[key] = model
        else:
            refitted[key], failures[key] = chosen[key], error
            _log.warning("series %s/%s: forecaster kept from the training part: %s",
                         key[0], key[1], error)
    return refitted, failures
