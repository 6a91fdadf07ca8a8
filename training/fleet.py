"""Fitting detectors for every series of a dataset, fanned out as Ray tasks.

A local Ray is started when none is running; ``RAY_ADDRESS`` attaches to a
cluster instead. Each task receives one series and returns its fitted
detectors (or its backtested forecaster), so a fleet of thousands of series spreads over every core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import ray
from tqdm import tqdm

from features.series import SeriesKey, duration_text
from models.backtest import DEFAULT_FORECASTERS, Selection, select_forecaster
from models.base import Detector, make_detector
from models.bundle import DEFAULT_DETECTORS, FALLBACK_DETECTOR, SeriesFit, fit_available
from models.correlation import CorrelationDetector, CorrelationDetectorConfig
from models.forecast import Forecaster
from training.signals import keep_signal_handlers, stopped_inside

_log = logging.getLogger(__name__)
#: Seconds between progress lines in the log while tasks run.
_LOG_EVERY_S = 30.0


def task_max_retries(environ: Mapping[str, str] = os.environ) -> int:
    """How many times Ray runs a fit again after its worker or node died: 3 by default.

    ``RAY_TASK_MAX_RETRIES``, the variable with which Ray itself lets a job change that
    default, overrides it here too (``deploy/nightly/rayjob.yaml`` sets it); -1 is Ray's
    "without end".
    """
    text = environ.get("RAY_TASK_MAX_RETRIES", "").strip()
    if not text:
        return 3
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < -1:
        raise ValueError(f"RAY_TASK_MAX_RETRIES is {text!r}; it takes a whole number of "
                         f"retries, 0 or more (-1: retry without end)")
    return value


def ensure_ray(num_cpus: int | None = None) -> None:
    """Start (or attach to) Ray once per process."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _log.info("attaching to the Ray cluster at %s", address)
        keep_signal_handlers(ray.init, address=address, log_to_driver=False)
    else:
        keep_signal_handlers(ray.init, num_cpus=num_cpus, include_dashboard=False,
                             log_to_driver=False)


def shutdown_ray(grace_s: float = 3.0) -> None:
    """``ray.shutdown()``, then kill the processes of the local node it left behind.

    Ray's dashboard and runtime-env agents watch the raylet only once they have
    started; stopped while they start (waiting for a GCS that is gone), they stay
    for a minute or more after the node, deaf to SIGTERM. What the shutdown leaves
    of this process' descendants gets ``grace_s`` to exit, then SIGKILL.
    """
    import psutil

    started = psutil.Process().children(recursive=True)
    ray.shutdown()
    _, left = psutil.wait_procs(started, timeout=grace_s)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            _log.info("killing %s (%d), left by the Ray shutdown", process.name(), process.pid)
            process.kill()
    psutil.wait_procs(left, timeout=grace_s)


def _gather(pending: list, desc: str, unit: str, progress: bool) -> list[tuple[Any, Any, str | None]]:
    """Wait for every task (``(key, result, error)`` triples), with a progress bar.

    Progress also goes to the log every ``_LOG_EVERY_S`` seconds, for runs without a terminal
    (the nightly job).
    """
    results, total = [], len(pending)
    started = last_logged = time.monotonic()
    with tqdm(total=total, desc=desc, unit=unit, disable=not progress) as bar:
        while pending:
            with stopped_inside():
                done, pending = ray.wait(pending, num_returns=min(len(pending), 16),
                                         timeout=5.0)
                results.extend(ray.get(done))
            bar.update(len(done))
            now = time.monotonic()
            if now - last_logged >= _LOG_EVERY_S and pending:
                _log.info("%s: %d of %d %s done in %.0f s", desc, len(results), total, unit,
                          now - started)
                last_logged = now
    _log.info("%s: %d %s done in %.1f s", desc, total, unit, time.monotonic() - started)
    return results


# Retries. A fit lost with its worker or its node (a pod evicted or a VM preempted under
# the nightly RayJob) is run again by Ray on another node, up to task_max_retries() times
# (3, Ray's own default written down so that a new Ray cannot change it); the same budget
# covers a finished fit run again because its result was lost with its node's object
# store. That is safe: a fit is a pure function of its series and config (seeded, no side
# effect: only the driver writes to MLflow). It is not without end (-1), because a series
# whose fit keeps killing its worker (out of memory) would then hold the run all night;
# after three losses the run fails and says which error it got. Exceptions are not retried
# (retry_exceptions=False): a fit is deterministic, so it would raise again; bad data is
# reported per series below, anything else is a bug to surface, not to repeat.
@ray.remote(max_retries=task_max_retries(), retry_exceptions=False)
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
    report: bool = True,
) -> tuple[dict[SeriesKey, dict[str, Detector]], dict[SeriesKey, str], dict[SeriesKey, str]]:
    """Fit detectors for every series in parallel, each with those its history allows.

    A series whose history is too short for some detectors is trained with the others
    (see :func:`models.bundle.fit_available`). ``report``: log what each series lacks
    (off for the holdout measurement, whose shorter parts would only repeat it).

    Returns
    -------
    fitted
        ``{(service, metric): {name: detector}}`` for the series that are trained.
    failures
        ``{(service, metric): note}`` for those that are not (see :func:`history_note`).
    partial
        ``{(service, metric): note}`` for those trained without some of the detectors.
    """
    for name in detector_names:
        make_detector(name, **dict((configs or {}).get(name, {})))  # fail fast on bad config
    started = time.perf_counter()
    names, config_copy = list(detector_names), dict(configs or {})
    fits, errors = _fan_out(
        {key: (fit_available, history, names, config_copy) for key, history in series.items()},
        "fitting series", "series", progress)
    failures = {key: f"{key[0]}/{key[1]}: {error}" for key, error in errors.items()}
    for note in failures.values() if report else ():
        _log.warning("series %s", note)  # not a valid series (see models.base.check_series)
    fitted, partial = {}, {}
    for key, fit in fits.items():
        note = history_note(key, fit)
        if fit.trained:
            fitted[key] = fit.detectors
        if note is not None:
            (partial if fit.trained else failures)[key] = note
            if report:
                _log.info("%s", note)
    _log.info("fitted %d series in %.1fs (%d with fewer detectors, %d not trained)",
              len(fitted), time.perf_counter() - started, len(partial), len(failures))
    return fitted, failures, partial


def history_note(key: SeriesKey, fit: SeriesFit) -> str | None:
    """One line on a series that did not get every detector asked for; None when it did.

    It names the points the series has and how long they span at its step, what was
    trained, what each missing detector needs (points and time) and when to train again::

        checkout/cpu: 40 points at 1m (40m): trained with static_threshold,
        dynamic_threshold, arima; random_forest needs 54 points (54m): train again
        after 14m more data to add it
    """
    if not fit.short and not fit.errors:
        return None

    def span(n_points: int) -> str:
        return "" if fit.step is None else f" ({duration_text(n_points * fit.step)})"

    def later(n_points: int) -> str:
        more = n_points - fit.n_points
        if fit.step is None:
            return f"once it has {n_points} points"
        return f"after {duration_text(more * fit.step)} more data"

    head = f"{key[0]}/{key[1]}: {fit.n_points} point{'' if fit.n_points == 1 else 's'}"
    head += " (no step yet)" if fit.step is None else f" at {duration_text(fit.step)}"
    head += span(fit.n_points)
    missing = [f"{name} needs {fit.needs[name]} points{span(fit.needs[name])}"
               for name in sorted(fit.short, key=lambda n: (fit.needs[n], n))]
    missing += [f"{name} not fitted: {error}" for name, error in fit.errors.items()]
    if fit.trained:
        status = f"trained with {', '.join(fit.detectors)}"
    else:
        status = f"not trained (scored by {FALLBACK_DETECTOR} until it is)"
    advice = ""
    if fit.short:
        everything = max(fit.needs.values())
        if fit.trained:
            advice = f": train again {later(everything)} to add {_them(fit.short)}"
        else:
            first = sorted(fit.needs.values())[fit.n_required - 1]
            enough = sorted((n for n in fit.needs if fit.needs[n] <= first),
                            key=lambda n: (fit.needs[n], n))
            advice = f": train again {later(first)} for {' and '.join(enough)}"
            if everything > first:
                advice += f", {later(everything).removeprefix('after ')} for all {len(fit.needs)}"
    return f"{head}: {status}; {', '.join(missing)}{advice}"


def _them(names: Sequence[str]) -> str:
    return "it" if len(names) == 1 else "them"


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
