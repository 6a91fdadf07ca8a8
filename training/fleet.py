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
def _task(key, fn, *args):
    try:
        return key, fn(*args), None
    except (ValueError, TypeError) as error:
        # A series that cannot be fitted (too short, all NaN) is reported, not fatal.
        return key, None, f"{type(error).__name__}: {error}"


def _fan_out(jobs: Mapping[Any, tuple], desc: str, unit: str,
             progress: bool) -> tuple[dict[Any, Any], dict[Any, str]]:
    """Run ``fn(*args)`` for every ``key: (fn, *args)`` as a Ray task: results and failures."""
    ensure_ray()
    pending = [_task.remote(key, fn, *args) for key, (fn, *args) in jobs.items()]
    done, failed = {}, {}
    for key, result, error in _gather(pending, desc, unit, progress):
        if error is None:
            done[key] = result
        else:
            failed[key] = error
    return done, failed


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
    started = time.perf_counter()
    names, config_copy = list(detector_names), dict(configs or {})
    fitted, failures = _fan_out(
        {key: (fit_series, history, names, config_copy) for key, history in series.items()},
        "fitting series", "series", progress)
    for key, error in failures.items():
        _log.warning("series %s/%s not fitted: %s", key[0], key[1], error)
    _log.info("fitted %d series in %.1fs (%d failed)", len(fitted), time.perf_counter() - started,
              len(failures))
    return fitted, failures


def _fit_correlation(config: CorrelationDetectorConfig | None,
                     wide: pd.DataFrame) -> CorrelationDetector:
    return CorrelationDetector(config).fit(wide)


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
    fitted, failures = _fan_out(
        {service: (_fit_correlation, config, wide) for service, wide in services.items()
         if wide.shape[1] >= 2},
        "fitting services", "service", progress)
    for service, error in failures.items():
        _log.warning("service %s: correlation not fitted: %s", service, error)
    return {s: d for s, d in fitted.items() if d.models_}, failures


def fit_forecasters(
    series: Mapping[SeriesKey, pd.Series],
    horizon: int,
    names: Sequence[str] = DEFAULT_FORECASTERS,
    *,
    progress: bool = True,
) -> tuple[dict[SeriesKey, Selection], dict[SeriesKey, str]]:
    """Backtest ``names`` on every series and fit the best on all of it, in parallel."""
    selected, failures = _fan_out(
        {key: (select_forecaster, history, horizon, list(names))
         for key, history in series.items()},
        "fitting forecasters", "series", progress)
    for key, error in failures.items():
        _log.warning("series %s/%s: no forecaster fitted: %s", key[0], key[1], error)
    return selected, failures


def _refit(forecaster: Forecaster, history: pd.Series) -> Forecaster:
    return type(forecaster)(forecaster.config).fit(history)


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
    refitted, failures = _fan_out(
        {key: (_refit, model, series[key]) for key, model in chosen.items()},
        "refitting forecasters", "series", progress)
    for key, error in failures.items():
        refitted[key] = chosen[key]
        _log.warning("series %s/%s: forecaster kept from the training part: %s",
                     key[0], key[1], error)
    return refitted, failures
