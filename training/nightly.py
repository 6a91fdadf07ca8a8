"""``aiops retrain --nightly``: train on the last N days, gate, promote; once per day, one at a time.

The data window of a nightly run is fixed by its day: the ``days`` days that
end at midnight UTC starting ``day`` (rows of ``day`` itself are not used).
So a second run for the same day would train on the same rows; it is skipped
when a finished run for that day and model is in MLflow (``--force`` runs it
again). A file lock beside the tracking store keeps two runs from
overlapping on one host; in Kubernetes the CronJob's ``concurrencyPolicy:
Forbid`` does the same across hosts (see ``deploy/``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path
from typing import Literal

import pandas as pd
from filelock import FileLock, Timeout
from mlflow.tracking import MlflowClient

from features.prometheus import ImportReport, LabelRule, PromQuery, import_prometheus
from training.tracking import DEFAULT_EXPERIMENT, configure_tracking
from training.train import TrainOptions, TrainResult, train

_log = logging.getLogger(__name__)

DAY_TAG = "nightly.day"
MODEL_TAG = "nightly.model"


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


def default_lock_path(model_name: str) -> Path:
    """``$AIOPS_LOCK_DIR`` or ``mlruns/``, one lock file per model."""
    return Path(os.environ.get("AIOPS_LOCK_DIR", "mlruns")) / f"nightly-{model_name}.lock"


def data_window(day: dt.date, days: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)``: the ``days`` days before midnight UTC at the start of ``day``."""
    if not 0 < days <= 3650:
        raise ValueError(f"days={days} must lie in (0, 3650]")
    end = pd.Timestamp(day, tz="UTC")
    return end - pd.Timedelta(days=days), end


def finished_run(experiment: str, model_name: str, day: dt.date) -> str | None:
    """The id of a finished nightly run of ``model_name`` for ``day``, if there is one."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(f"tags.`{DAY_TAG}` = '{day.isoformat()}' and "
                       f"tags.`{MODEL_TAG}` = '{model_name}' and attributes.status = 'FINISHED'"),
        max_results=1)
    return runs[0].info.run_id if runs else None


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

    With a Prometheus ``source``, the window (up to now at the latest) is first
    imported into ``options.data``, resuming after each series' last stored
    point, under the same lock, so two runs never import into one store at once.

    Raises
    ------
    NightlyLockedError
        Another nightly run of the same model holds the lock.
    features.prometheus.PrometheusImportError
        The import failed; the store is as it was and nothing is trained.
    ValueError, DataValidationError
        The window holds no rows, or the data is bad; nothing is registered.
    """
    day = day or dt.datetime.now(dt.UTC).date()
    start, end = data_window(day, days)
    lock = FileLock(str(lock_path or default_lock_path(options.model_name)), timeout=0)
    Path(lock.lock_file).parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()
    except Timeout:
        raise NightlyLockedError(f"another nightly run of {options.model_name!r} holds "
                                 f"{lock.lock_file}; not starting a second one") from None
    try:
        configure_tracking()
        experiment = options.experiment or DEFAULT_EXPERIMENT
        done = None if force else finished_run(experiment, options.model_name, day)
        if done is not None:
            return NightlyResult(day, True, f"nightly run for {day} already finished (run "
                                            f"{done}); nothing to do (--force runs it again)")
        imported = None
        if source is not None:
            imported = import_prometheus(
                source.url, source.queries, options.data, start=start,
                end=min(end, pd.Timestamp.now(tz="UTC")), step=source.step, rule=source.rule,
                timeout_s=source.timeout_s, on_infinite=source.on_infinite)
        nightly = dataclasses.replace(
            options, start=start, end=end, run_name=f"nightly-{day.isoformat()}",
            tags={**options.tags, DAY_TAG: day.isoformat(), MODEL_TAG: options.model_name})
        result = train(nightly)
        return NightlyResult(day, False, f"trained on {start:%Y-%m-%d} to {end:%Y-%m-%d}: "
                                         f"{result.decision}", result, imported)
    finally:
        lock.release()

