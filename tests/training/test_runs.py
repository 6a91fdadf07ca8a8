"""Which RUNNING runs have lost their process (training.runs.why_stale), without MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from training.runs import HEARTBEAT_TAG, HOST_TAG, STALE_AFTER_S, process_tags, why_stale


def test_a_run_of_a_live_process_is_not_stale():
    tags = process_tags()
    assert why_stale(tags, started_ms=int(time.time() * 1000)) is None


def test_a_run_whose_process_is_gone_is_stale():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    tags = {**process_tags(), "aiops.pid": child.stdout.strip()}
    assert "is gone" in why_stale(tags, started_ms=int(time.time() * 1000))


def test_a_reused_pid_does_not_keep_a_run_alive():
    # This process started after the run did: the run's process was another one.
    import psutil

    tags = process_tags()
    started_s = psutil.Process(os.getpid()).create_time() - 60
    assert "is gone" in why_stale(tags, started_ms=int(started_s * 1000))


def test_runs_elsewhere_go_by_their_heartbeat():
    now = time.time()
    fresh = {**process_tags(), HOST_TAG: "other-host", HEARTBEAT_TAG: f"{now - 10:.0f}"}
    old = {**fresh, HEARTBEAT_TAG: f"{now - STALE_AFTER_S - 10:.0f}"}
    assert why_stale(fresh, started_ms=0, now_s=now) is None
    assert "no heartbeat from other-host" in why_stale(old, started_ms=0, now_s=now)
    assert why_stale({}, started_ms=0) is None, "runs without process tags are not judged"
