"""``aiops retrain --nightly``: train on the last N days, gate, promote; once per day, one at a time.

The data window of a nightly run is fixed by its day: the ``days`` days that
end at midnight UTC starting ``day`` (rows of ``day`` itself are not used).
So a second run for the same day would train on the same rows; it is skipped
when a finished run for that day and model is in the tracking store
(``--force`` runs it again).

Once per day holds per tracking store and model, wherever the runs start: a
run claims its day by creating its MLflow run (tagged with day and model)
before it trains, waits :data:`CLAIM_SETTLE_S`, and gives way when an earlier
claim of the same day and model is alive (or finished, without ``--force``).
A file lock, beside a SQLite store or in ``$AIOPS_LOCK_DIR``, only keeps two
runs on one host from overlapping at all; in Kubernetes the CronJob's
``concurrencyPolicy: Forbid`` does the same (see ``deploy/``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

import pandas as pd
from filelock import FileLock, Timeout
from mlflow.tracking import MlflowClient

from features.prometheus import ImportReport, LabelRule, PromQuery, import_prometheus
from models.alarms import AlarmPolicy
from training.runs import Heartbeat, is_alive, process_tags
from training.tracking import DEFAULT_EXPERIMENT, configure_tracking, ensure_experiment
from training.train import TrainOptions, TrainResult, train

_log = logging.getLogger(__name__)

DAY_TAG = "nightly.day"
MODEL_TAG = "nightly.model"
#: Seconds a new claim waits before looking for earlier ones: longer than a store takes to
#: commit a new run, so that of two claims the earlier is always seen by the later.
CLAIM_SETTLE_S = 2.0


class NightlyLockedError(RuntimeError):
    """Another nightly run holds the lock."""


@dataclasses.dataclass(frozen=True)
class NightlyResult:
    day: dt.date
    skipped: bool
    message: str
    result: TrainResult | None = None
    #: What was imported from Prometheus before training (None: no source given).
    imported: ImportReport | None = None


@dataclasses.dataclass(frozen=True)
class PrometheusSource:
    """Where a nightly run fetches its window before training (see :mod:`features.prometheus`)."""

    url: str
    queries: tuple[PromQuery, ...]
    step: str | float = "1m"
    rule: LabelRule = dataclasses.field(default_factory=LabelRule)
    timeout_s: float = 30.0
    on_infinite: Literal["gap", "error"] = "gap"


def default_lock_path(model_name: str, tracking_uri: str | None = None) -> Path:
    """One lock file per model: in ``$AIOPS_LOCK_DIR``, else beside a SQLite tracking store.

    Elsewhere (a tracking server, PostgreSQL) in the temporary folder: the lock
    only guards one host; the claim in the store guards the day.
    """
    folder = os.environ.get("AIOPS_LOCK_DIR")
    if not folder and tracking_uri and tracking_uri.startswith("sqlite:///"):
        folder = str(Path(tracking_uri.removeprefix("sqlite:///")).parent)
    return Path(folder or Path(tempfile.gettempdir()) / "aiops-locks") / f"nightly-{model_name}.lock"


def data_window(day: dt.date, days: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)``: the ``days`` days before midnight UTC at the start of ``day``."""
    if not 0 < days <= 3650:
        raise ValueError(f"days={days} must lie in (0, 3650]")
    end = pd.Timestamp(day, tz="UTC")
    return end - pd.Timedelta(days=days), end


def _day_filter(model_name: str, day: dt.date) -> str:
    return f"tags.`{DAY_TAG}` = '{day.isoformat()}' and tags.`{MODEL_TAG}` = '{model_name}'"


def finished_run(experiment: str, model_name: str, day: dt.date) -> str | None:
    """The id of a finished nightly run of ``model_name`` for ``day``, if there is one."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"{_day_filter(model_name, day)} and attributes.status = 'FINISHED'",
        max_results=1)
    return runs[0].info.run_id if runs else None


def _already_done(day: dt.date, run_id: str) -> str:
    return (f"nightly run for {day} already finished (run {run_id}); nothing to do (--force "
            f"runs it again)")


def claim_day(experiment_id: str, model_name: str, day: dt.date, *, force: bool = False,
              settle_s: float = CLAIM_SETTLE_S) -> tuple[str | None, str]:
    """Create this run's claim on ``day``: ``(run id, "")`` if it holds, ``(None, why)`` if not.

    A claim holds when no earlier claim of the same day and model is alive
    (its process still at work, see :func:`training.runs.is_alive`) and, without
    ``force``, none finished (then ``why`` says so). Claims are ordered by start
    time, then run id. A claim that gives way is deleted.

    Raises
    ------
    NightlyLockedError
        An earlier claim is alive.
    """
    client = MlflowClient()
    mine = client.create_run(
        experiment_id, run_name=f"nightly-{day.isoformat()}",
        tags={DAY_TAG: day.isoformat(), MODEL_TAG: model_name, "status.stage": "claimed",
              **process_tags()}).info
    time.sleep(settle_s)
    order = (mine.start_time, mine.run_id)
    for run in client.search_runs([experiment_id], filter_string=_day_filter(model_name, day),
                                  max_results=1000):
        if run.info.run_id == mine.run_id:
            continue
        host = run.data.tags.get("aiops.host", "another host")
        if run.info.status == "FINISHED" and not force:
            client.delete_run(mine.run_id)
            return None, _already_done(day, run.info.run_id)
        if is_alive(run) and (run.info.start_time, run.info.run_id) < order:
            client.delete_run(mine.run_id)
            raise NightlyLockedError(
                f"another nightly run of {model_name!r} for {day} is at work (run "
                f"{run.info.run_id} on {host}); not starting a second one")
    return mine.run_id, ""


def _import(source: PrometheusSource | None, data: Path, start: pd.Timestamp,
            end: pd.Timestamp) -> ImportReport | None:
    """The window fetched from Prometheus into ``data`` (up to now at the latest), if a source."""
    if source is None:
        return None
    return import_prometheus(source.url, source.queries, data, start=start,
                             end=min(end, pd.Timestamp.now(tz="UTC")), step=source.step,
                             rule=source.rule, timeout_s=source.timeout_s,
                             on_infinite=source.on_infinite)


def _end_claim(run_id: str) -> None:
    """Mark a claim ``FAILED`` if the run did not get as far as training in it."""
    client = MlflowClient()
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
    except Exception as error:  # the error that ended the run matters more
        _log.warning("nightly claim %s not marked failed: %s", run_id, error)


def retrain_nightly(
    options: TrainOptions,
    *,
    days: float = 14.0,
    day: dt.date | None = None,
    force: bool = False,
    lock_path: Path | None = None,
    source: PrometheusSource | None = None,
) -> NightlyResult:
    """Train ``options`` on the window of ``day`` (default: today, UTC) unless already done.

    The detectors do not learn the incident the champion is paging at the end of the
    window (:mod:`training.unlearnt`) under ``options.alarm_policy`` (default: the default
    policy).

    With a Prometheus ``source``, the window (up to now at the latest) is first
    imported into ``options.data``, resuming after each series' last stored
    point, under the same lock, so two runs never import into one store at once.

    Raises
    ------
    NightlyLockedError
        Another nightly run of the same model holds the lock, or has claimed the day.
    features.prometheus.PrometheusImportError
        The import failed; the store is as it was and nothing is trained.
    ValueError, DataValidationError
        The window holds no rows, or the data is bad; nothing is registered.
    """
    day = day or dt.datetime.now(dt.UTC).date()
    start, end = data_window(day, days)
    tracking_uri = configure_tracking()
    lock = FileLock(str(lock_path or default_lock_path(options.model_name, tracking_uri)),
                    timeout=0)
    Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()
    except Timeout:
        raise NightlyLockedError(f"another nightly run of {options.model_name!r} holds "
                                 f"{lock.lock_file}; not starting a second one") from None
    try:
        experiment = options.experiment or DEFAULT_EXPERIMENT
        done = None if force else finished_run(experiment, options.model_name, day)
        if done is not None:
            return NightlyResult(day, True, _already_done(day, done))
        run_id, why = claim_day(ensure_experiment(experiment), options.model_name, day,
                                force=force)
        if run_id is None:
            return NightlyResult(day, True, why)
        try:
            with Heartbeat(run_id):  # training beats on its own (training.runs.tracked_run)
                imported = _import(source, options.data, start, end)
            result = train(dataclasses.replace(
                options, start=start, end=end, run_id=run_id,
                alarm_policy=options.alarm_policy or AlarmPolicy(),
                tags={**options.tags, DAY_TAG: day.isoformat(), MODEL_TAG: options.model_name}))
        except BaseException:
            _end_claim(run_id)
            raise
        return NightlyResult(day, False, f"trained on {start:%Y-%m-%d} to {end:%Y-%m-%d}: "
                                         f"{result.decision}", result, imported)
    finally:
        lock.release()
