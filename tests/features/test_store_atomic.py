"""The store's writers publish atomically.

Real writer processes (``aiops data synth`` over a store, and the importer's append) are
SIGKILLed at seeded random points of their write: a watcher counts the changes it sees to the
store's files, and each round kills at another count, spread over those of an uninterrupted
run. After every kill the store reads as it was before the write or as the write left it,
exactly, with no partial Parquet file in sight, and a rerun of the writer completes. Narrower
tests stop a write at a chosen point and check that the next reader or writer completes it,
or cleans it up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.schema import METRIC, SERVICE, TIMESTAMP, VALUE, DataValidationError
from features.store import JOURNAL, LOCK, iter_files, list_series, read_dataset, write_dataset
from features.synth import FleetConfig, generate_fleet

ROOT = Path(__file__).resolve().parents[2]
#: One service over a week at hourly steps: 6 series in 48 day partitions.
SYNTH = FleetConfig(n_services=1, days=7.0, step="1h")
#: The ``aiops`` entry point (``main`` is what ``python -m cli`` runs). It says "ready"
#: once its imports are done and then reads its arguments, so that the next writer imports
#: while this round's store is checked.
CLI = """
import json, sys
from cli import main
print("ready", flush=True)
sys.exit(main(json.loads(sys.stdin.readline())))
"""
#: The importer's write path: the rows after the last one stored for each series, appended at once.
APPEND = """
import json, sys
import pandas as pd
from features.prometheus import last_stored
from features.store import write_dataset
print("ready", flush=True)
root, source = json.loads(sys.stdin.readline())
frame = pd.read_parquet(source)
new = []
for (service, metric), rows in frame.groupby(["service", "metric"]):
    last = last_stored(root, service, metric)
    new.append(rows if last is None else rows[rows["timestamp"] > last])
write_dataset(pd.concat(new, ignore_index=True), root, existing="append")
print("appended")
"""


@pytest.fixture
def writers() -> Iterator[Callable[[str], subprocess.Popen]]:
    """Start writer processes (``CLI`` or ``APPEND``); any still running at the end are killed."""
    started: list[subprocess.Popen] = []

    def start(code: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        started.append(subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _listing(root: Path) -> set[str]:
    return {os.path.join(folder, name) for folder, dirs, files in os.walk(root)
            for name in dirs + files}


def _run(process: subprocess.Popen, args: list[str], root: Path,
         kill_at_change: int | None = None) -> tuple[bool, int]:
    """Hand a started writer its arguments and watch the files under ``root`` as it runs;
    SIGKILL it when the ``kill_at_change``-th change to them is seen.

    Returns whether it was killed before it reported its write done, and how many changes
    were seen (a file or folder added or removed since the last look).
    """
    assert process.stdout.readline() == "ready\n", process.stderr.read()
    listing = _listing(root)
    process.stdin.write(json.dumps(args) + "\n")
    process.stdin.flush()
    n_changes = 0
    # Until the writer reports (or dies); no sleep: the finer the looks, the more points to kill at.
    while not select.select([process.stdout], [], [], 0)[0]:
        now = _listing(root)
        if now != listing:
            n_changes, listing = n_changes + 1, now
            if n_changes == kill_at_change:
                process.send_signal(signal.SIGKILL)
    report, errors = process.communicate(timeout=60)
    assert process.returncode in (0, -signal.SIGKILL), errors
    return not report, n_changes


def _visible_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        found += [Path(folder, f) for f in files if not f.startswith((".", "_"))]
    return found


def _assert_whole(root: Path, *states: pd.DataFrame) -> int:
    """Every visible file is a whole Parquet file and the store reads as one of ``states``."""
    for path in _visible_files(root):
        try:
            pq.read_metadata(path)
        except (pa.ArrowInvalid, OSError) as error:  # no footer
            raise AssertionError(f"{path} is visible but not a whole Parquet file") from error
    frame = read_dataset(root)
    for i, state in enumerate(states):
        if frame.equals(state):
            return i
    raise AssertionError(f"the store holds {len(frame)} rows, matching none of the states "
                         f"({', '.join(str(len(s)) for s in states)} rows)")


def _leftovers(root: Path) -> list[Path]:
    """Hidden files other than the store's lock and journal, and empty folders."""
    return [p for p in root.rglob("*")
            if (p.name.startswith(".") and not (p.parent == root and p.name in (LOCK, JOURNAL)))
            or (p.is_dir() and not any(p.iterdir()))]


def _kill_points(n: int, n_changes: int) -> list[int]:
    """``n`` changes to kill at, one in each ``n``-th of ``n_changes``, in a seeded random order."""
    rng = random.Random(13)
    points = [1 + int((i + rng.random()) * n_changes / n) for i in range(n)]
    rng.shuffle(points)
    return points


def _synth_args(root: Path, seed: int) -> list[str]:
    return ["data", "synth", "--out", str(root), "--services", str(SYNTH.n_services),
            "--days", str(SYNTH.days), "--step", SYNTH.step, "--seed", str(seed)]


def test_a_killed_synth_over_a_store_leaves_the_old_or_the_new_store(tmp_path, writers):
    spare = writers(CLI)
    states = []
    for seed in (0, 1):  # what the store reads as after an uninterrupted write of each seed
        reference = tmp_path / f"seed-{seed}"
        write_dataset(generate_fleet(dataclasses.replace(SYNTH, seed=seed)), reference)
        states.append(read_dataset(reference))
    root = tmp_path / "store"
    shutil.copytree(tmp_path / "seed-0", root)
    _, n_changes = _run(spare, _synth_args(root, 1), root)
    spare = writers(CLI)  # imports while the store is checked
    assert _assert_whole(root, *states) == 1

    current, n_killed = 1, 0
    for point in _kill_points(6, n_changes):
        killed, _ = _run(spare, _synth_args(root, 1 - current), root, kill_at_change=point)
        spare = writers(CLI)
        n_killed += killed
        current = _assert_whole(root, *states)
    assert n_killed >= 4
    _run(spare, _synth_args(root, 1 - current), root)  # the rerun after the last kill
    assert _assert_whole(root, *states) == 1 - current
    assert _leftovers(root) == []


def test_a_killed_append_adds_all_of_its_rows_or_none(tmp_path, writers):
    spare = writers(APPEND)
    fleet = generate_fleet(FleetConfig(n_services=1, days=10.0, step="10min"))
    fleet = fleet[fleet[METRIC].isin(sorted(set(fleet[METRIC]))[:3])]
    cut = fleet[TIMESTAMP].min().normalize() + pd.Timedelta(days=3)
    reference = tmp_path / "reference"
    write_dataset(fleet, reference)
    new = read_dataset(reference)
    old = new[new[TIMESTAMP] < cut].reset_index(drop=True)
    base = tmp_path / "base"
    write_dataset(fleet[fleet[TIMESTAMP] < cut], base)
    source = tmp_path / "source.parquet"
    fleet.to_parquet(source)  # the importer is handed a week more than is stored
    root = tmp_path / "store"
    args = [str(root), str(source)]

    shutil.copytree(base, root)
    _, n_changes = _run(spare, args, root)
    spare = writers(APPEND)
    assert _assert_whole(root, new) == 0
    n_killed = 0
    for point in _kill_points(12, n_changes):
        for _ in range(2):  # a writer that finished before that change is killed earlier again
            shutil.rmtree(root)
            shutil.copytree(base, root)
            killed, seen = _run(spare, args, root, kill_at_change=point)
            spare = writers(APPEND)
            _assert_whole(root, old, new)
            if killed or not seen:
                break
            point = 1 + point % seen  # a busy machine shows fewer, coarser changes
        n_killed += killed
    assert n_killed >= 7
    _run(spare, args, root)  # the rerun after the last kill
    assert _assert_whole(root, old, new) == 1
    assert _leftovers(root) == []


# -- a writer stopped at a chosen point, in-process -------------------------------------------
class Killed(BaseException):
    """Stands for a SIGKILL where it is raised (no ``except Exception`` catches it)."""


def _frame(days: str, value: float, metrics: tuple[str, ...] = ("cpu", "latency")) -> pd.DataFrame:
    stamps = pd.date_range(f"2026-03-{days}", periods=48, freq="1h", tz="UTC")
    return pd.concat([pd.DataFrame({TIMESTAMP: stamps, SERVICE: "api", METRIC: m, VALUE: value})
                      for m in metrics], ignore_index=True)


def _die_at_replace(monkeypatch: pytest.MonkeyPatch, n_calls: int) -> None:
    """Make the ``n_calls``-th ``os.replace`` a kill: 1 is the commit, 2.. publish files."""
    calls = []
    real = os.replace

    def replace(source, target):
        calls.append(source)
        if len(calls) == n_calls:
            raise Killed
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)


@pytest.fixture
def store(tmp_path) -> Path:
    """Two days of two series, written once; then a replace of both days with other values."""
    root = tmp_path / "metrics"
    write_dataset(_frame("01", 1.0), root)
    return root


def _values(root: Path) -> list[float]:
    return sorted(set(read_dataset(root)[VALUE]))


@pytest.mark.parametrize("published", [0, 1, 3])
def test_a_write_killed_after_its_commit_is_completed_by_the_next_reader(
        store, monkeypatch, published):
    _die_at_replace(monkeypatch, 2 + published)
    with pytest.raises(Killed):
        write_dataset(_frame("01", 2.0), store, existing="replace")
    monkeypatch.undo()
    assert json.loads((store / JOURNAL).read_text())["done"] is False
    assert _values(store) == [2.0]  # all of the new rows, none of the old
    assert len(read_dataset(store)) == 2 * 48
    assert json.loads((store / JOURNAL).read_text())["done"] is True
    assert len(list(iter_files(store))) == 4
    assert _leftovers(store) == []


def test_listing_completes_a_killed_write_too(store, monkeypatch):
    _die_at_replace(monkeypatch, 3)
    with pytest.raises(Killed):
        write_dataset(_frame("05", 2.0, ("cpu", "disk")), store)
    monkeypatch.undo()
    assert list_series(store) == [("api", "cpu"), ("api", "disk"), ("api", "latency")]
    assert len(list(iter_files(store, metric="disk"))) == 2
    assert _leftovers(store) == []


def test_a_write_killed_after_its_commit_is_completed_by_the_next_writer(store, monkeypatch):
    _die_at_replace(monkeypatch, 3)
    with pytest.raises(Killed):
        write_dataset(_frame("01", 2.0), store, existing="replace")
    monkeypatch.undo()
    write_dataset(_frame("05", 3.0), store)  # a later append finishes the replace first
    assert _values(store) == [2.0, 3.0]
    assert len(read_dataset(store)) == 4 * 48
    assert _leftovers(store) == []


def test_a_write_killed_before_its_commit_is_invisible_and_cleaned_by_the_next_writer(
        store, monkeypatch):
    before = read_dataset(store)
    n_files = len(list(iter_files(store)))
    _die_at_replace(monkeypatch, 1)
    with pytest.raises(Killed):  # a new series and the old days, staged but not committed
        write_dataset(_frame("01", 2.0, ("cpu", "disk", "latency")), store, existing="replace")
    monkeypatch.undo()
    assert _leftovers(store)  # its staged files and the folders it made for them
    pd.testing.assert_frame_equal(read_dataset(store), before)
    assert list_series(store) == [("api", "cpu"), ("api", "latency")]
    assert len(list(iter_files(store))) == n_files

    write_dataset(_frame("05", 3.0, ("cpu",)), store)
    assert _leftovers(store) == []
    assert _values(store) == [1.0, 3.0]
    assert list_series(store) == [("api", "cpu"), ("api", "latency")]


def test_a_write_that_fails_while_staging_leaves_nothing_behind(store, monkeypatch):
    def fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="No space"):
        write_dataset(_frame("05", 2.0, ("disk",)), store)
    monkeypatch.undo()
    assert _leftovers(store) == []
    assert _values(store) == [1.0]


def test_reads_while_writes_commit_see_one_write_or_the_other(store):
    """A reader never sees half of a replace, though it takes no lock while no write is applied."""
    write_dataset(_frame("01", 1.0, ("cpu", "disk", "latency")), store, existing="replace")
    seen, errors = [], []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                frame = read_dataset(store)
            except DataValidationError as error:
                errors.append(error)
                return
            seen.append((len(frame), sorted(set(frame[VALUE]))))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        i = 0
        while len(seen) < 8 and not errors and time.monotonic() < deadline:
            i += 1
            write_dataset(_frame("01", float(i % 2 + 1), ("cpu", "disk", "latency")), store,
                          existing="replace")
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(seen) >= 8
    assert {(n, tuple(values)) for n, values in seen} <= {(3 * 48, (1.0,)), (3 * 48, (2.0,))}


def test_a_corrupt_visible_file_is_named(store):
    bad = next(iter(iter_files(store, metric="cpu")))
    Path(bad).write_bytes(b"PAR1 not a footer")
    with pytest.raises(DataValidationError) as error:
        read_dataset(store)
    assert error.value.file == bad


def test_a_journal_changed_by_hand_is_named(store):
    (store / JOURNAL).write_text("{not json")
    with pytest.raises(DataValidationError) as error:
        read_dataset(store)
    assert error.value.file == str(store / JOURNAL)
