"""A training run's life beside MLflow: stopping on a signal, and runs left by killed processes.

MLflow marks a run ``FAILED`` when the code inside ``mlflow.start_run()``
raises, but a process killed outright (SIGKILL, the OOM killer, a lost node)
leaves its run ``RUNNING`` for good. So every training run carries the
process that runs it (:func:`process_tags`: host, boot, pid) and a heartbeat
it refreshes while it lives (:class:`Heartbeat`); :func:`end_stale_runs`, called
when a run starts, marks ``FAILED`` the runs whose process is gone: on this
host, by its pid; elsewhere, by a heartbeat older than :data:`STALE_AFTER_S`.

:func:`tracked_run` also ends a run stopped by SIGTERM or SIGINT ``KILLED``
(see :mod:`training.signals`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
import psutil
from mlflow.tracking import MlflowClient

from training.signals import Stopped

_log = logging.getLogger(__name__)

HOST_TAG = "aiops.host"
BOOT_TAG = "aiops.boot_id"
PID_TAG = "aiops.pid"
HEARTBEAT_TAG = "aiops.heartbeat"
ENDED_TAG = "aiops.ended"
#: How often a live run refreshes its heartbeat tag.
HEARTBEAT_S = 30.0
#: A run on another host whose heartbeat is older than this is taken for dead.
STALE_AFTER_S = 300.0
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """Which process runs the run: host name, boot id, pid, and a first heartbeat."""
    return {HOST_TAG: socket.gethostname(), BOOT_TAG: _boot_id(), PID_TAG: str(os.getpid()),
            HEARTBEAT_TAG: f"{time.time():.0f}"}


class Heartbeat:
    """Refresh a run's :data:`HEARTBEAT_TAG` every ``interval_s`` from a daemon thread."""

    def __init__(self, run_id: str, interval_s: float = HEARTBEAT_S) -> None:
        self.run_id, self.interval_s = run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mlflow-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        client = MlflowClient()
        while not self._stop.wait(self.interval_s):
            try:
                client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
            except Exception as error:  # a store that hiccups must not end the run
                _log.warning("run %s: heartbeat not recorded: %s", self.run_id, error)


def why_stale(tags: Mapping[str, str], started_ms: int, now_s: float | None = None) -> str | None:
    """Why the process of a ``RUNNING`` run with ``tags`` is gone, or None if it may be alive.

    A run without process tags (written by something else) is never judged.
    """
    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if not host or not pid:
        return None
    now_s = time.time() if now_s is None else now_s
    if host == socket.gethostname() and tags.get(BOOT_TAG) == _boot_id():
        try:
            alive = psutil.Process(int(pid)).create_time() <= started_ms / 1000 + 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            alive = False
        return None if alive else f"its process {pid} on {host} is gone"
    if host == socket.gethostname():
        return f"{host} restarted since its process {pid} started it"
    try:
        age_s = now_s - float(tags.get(HEARTBEAT_TAG, "nan"))
    except ValueError:
        return None
    if age_s > STALE_AFTER_S:
        return f"no heartbeat from {host} (process {pid}) for {age_s:.0f} s"
    return None


def end_stale_runs(experiment_id: str) -> list[str]:
    """Mark ``FAILED`` the ``RUNNING`` runs of the experiment whose process is gone; their ids."""
    client = MlflowClient()
    ended = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=1000):
        reason = why_stale(run.data.tags, run.info.start_time)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, ENDED_TAG, f"marked failed: {reason}")
        client.set_terminated(run.info.run_id, "FAILED")
        _log.warning("run %s was left RUNNING (%s): marked FAILED", run.info.run_id, reason)
        ended.append(run.info.run_id)
    return ended


def is_alive(run) -> bool:
    """Whether an MLflow run is ``RUNNING`` and its process may still be at work."""
    return (run.info.status == "RUNNING"
            and why_stale(run.data.tags, run.info.start_time) is None)


@contextlib.contextmanager
def tracked_run(experiment_id: str, *, run_id: str | None = None,
                run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run`` with the process tags and a heartbeat; a stopped run ends ``KILLED``.

    Runs of the experiment left ``RUNNING`` by killed processes are marked
    ``FAILED`` first. ``run_id`` resumes a run created beforehand (the nightly
    job's claim, which carries the process tags already).
    """
    end_stale_runs(experiment_id)
    if run_id is None:
        started = mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                   tags=process_tags())
    else:
        started = mlflow.start_run(run_id=run_id)
    with started as run, Heartbeat(run.info.run_id):
        try:
            yield run
        except Stopped as stop:
            mlflow.set_tag(ENDED_TAG, str(stop))
            mlflow.end_run("KILLED")
            raise
