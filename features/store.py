"""The Parquet metrics store: hive-partitioned by ``service/metric/date``.

A dataset is a directory such as::

    data/service=checkout/metric=cpu_utilization/date=2026-01-05/part-<uuid>-0.parquet

Reads go through :mod:`pyarrow.dataset`, so a query for one service, metric
and time range opens only the files of those partitions. Every file read is
validated on its own, so an error names the file and the row inside it.

Writers publish atomically, so a writer killed at any instant leaves the store
whole. A write holds the store's lock (``.lock`` in the root) from start to end,
so writers of one store take turns. It writes its files under hidden names
(``.part-<uuid>-<i>.parquet`` in their partition folders; readers skip names
that start with ``.`` or ``_``) and syncs them to disk. It commits by replacing
``.journal.json`` with the list of those files and, for ``existing="replace"``,
of the files they replace; then it renames the new files to their visible
names, deletes the replaced ones and marks the journal done. A writer killed
before its commit leaves the store as it was (the next writer deletes its hidden
files); one killed after it leaves a journal that the next reader or writer
applies first. A read that overlaps a commit is repeated, so it sees the store
as one write left it, never half of a write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from filelock import FileLock, Timeout

from features.schema import (
    ARROW_SCHEMA,
    DATE,
    METRIC,
    PARTITION_COLUMNS,
    SERVICE,
    TIMESTAMP,
    VALUE,
    DataValidationError,
)
from features.timeparse import parse_timestamp
from features.validation import validate_frame

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: In the root of a store: the writers' lock and the journal of the last write.
LOCK, JOURNAL = ".lock", ".journal.json"
#: The name of a written file before its write commits, in its partition folder.
STAGED = ".part-"
_READ_TRIES = 2

PARTITIONING = ds.partitioning(
    pa.schema([(c, pa.string()) for c in PARTITION_COLUMNS]), flavor="hive"
)
#: Stored columns plus the partition keys; every file is still read and checked on its own.
DATASET_SCHEMA = pa.schema(
    [f for f in ARROW_SCHEMA if f.name not in PARTITION_COLUMNS]
    + [pa.field(c, pa.string()) for c in PARTITION_COLUMNS]
)


def writers_lock(root: str | Path) -> FileLock:
    """The lock that writers of ``root`` take turns on (reentrant within a thread).

    Hold it around a read and the write that depends on it (the Prometheus importer's
    "rows after the last stored one") so that no other writer comes between them.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    return FileLock(Path(root) / LOCK, is_singleton=True)


def write_dataset(
    frame: pd.DataFrame,
    root: str | Path,
    *,
    existing: Literal["append", "replace"] = "append",
) -> int:
    """Validate ``frame`` and write it under ``root``, partitioned by service, metric and date.

    The write is atomic: readers see all of its rows or none, also if the
    writer is killed. Writers of one store wait for each other.

    Parameters
    ----------
    existing
        ``"append"`` adds new files beside any already there (reading the
        dataset later refuses timestamps stored twice); ``"replace"`` replaces
        the files of the partitions being written, so writing the same day
        again is idempotent. Other partitions are left as they are.

    Returns
    -------
    int
        The number of rows written.
    """
    if existing not in ("append", "replace"):
        raise ValueError(f"existing must be 'append' or 'replace', got {existing!r}")
    clean = validate_frame(frame)
    columns = [f.name for f in ARROW_SCHEMA if f.name in clean.columns]
    table_frame = clean[columns].copy()
    table_frame[DATE] = clean[TIMESTAMP].dt.strftime("%Y-%m-%d")
    schema = pa.schema([ARROW_SCHEMA.field(c) for c in columns] + [pa.field(DATE, pa.string())])
    table = pa.Table.from_pandas(table_frame, schema=schema, preserve_index=False)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with writers_lock(root):
        _recover(root)
        staged: list[str] = []
        try:
            ds.write_dataset(
                table,
                str(root),
                format="parquet",
                partitioning=PARTITIONING,
                # Hidden until the commit: readers skip names that start with ".".
                basename_template=f"{STAGED}{uuid.uuid4().hex}-{{i}}.parquet",
                existing_data_behavior="overwrite_or_ignore",
                # Without this Arrow may interleave rows from its threads, breaking time order.
                preserve_order=True,
                file_visitor=lambda written: staged.append(
                    Path(written.path).relative_to(root).as_posix()),
            )
            for name in staged:
                _fsync(root / name)
            _fsync_folders(root, staged)
        except BaseException:
            _delete_staged(root, _staged_files(root))
            raise
        replaced = []
        if existing == "replace":
            for folder in sorted({Path(name).parent for name in staged}):
                replaced += [(folder / entry.name).as_posix() for entry in os.scandir(root / folder)
                             if entry.is_file() and not entry.name.startswith((".", "_"))]
        journal = {"id": uuid.uuid4().hex, "done": False, "staged": staged, "replaced": replaced}
        _save_journal(root, journal)  # the commit point
        _apply(root, journal)
    return len(clean)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folders(root: Path, names: list[str]) -> None:
    """fsync the folders holding ``names`` (relative to ``root``), their parents and ``root``."""
    folders = {root / parent for name in names for parent in Path(name).parents}
    for folder in sorted(folders, reverse=True):
        _fsync(folder)


def _load_journal(root: Path) -> dict[str, Any] | None:
    path = root / JOURNAL
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise DataValidationError(f"the store's journal is not JSON ({error}); it is written "
                                  "atomically, so something else changed it: delete it if no "
                                  "write was cut short", file=str(path)) from None


def _save_journal(root: Path, journal: dict[str, Any]) -> None:
    temporary = root / f"{JOURNAL}.tmp"
    with temporary.open("w") as file:
        json.dump(journal, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, root / JOURNAL)
    _fsync(root)


def _apply(root: Path, journal: dict[str, Any]) -> None:
    """Publish a committed write's files, delete those they replace, mark the journal done.

    Idempotent, so a write interrupted here is completed by applying its journal again.
    """
    for name in journal["staged"]:
        source = root / name
        if source.exists():  # else published by an earlier, interrupted application
            os.replace(source, source.with_name(source.name.removeprefix(".")))
    for name in journal["replaced"]:
        (root / name).unlink(missing_ok=True)
    _fsync_folders(root, journal["staged"])
    _save_journal(root, {"id": journal["id"], "done": True})


def _complete(root: Path) -> None:
    """With the lock held: apply the journal of a write whose writer was killed applying it."""
    journal = _load_journal(root)
    if journal is not None and not journal["done"]:
        _apply(root, journal)


def _recover(root: Path) -> None:
    """With the lock held: complete a committed write, delete what uncommitted ones left."""
    _complete(root)
    _delete_staged(root, _staged_files(root))
    (root / f"{JOURNAL}.tmp").unlink(missing_ok=True)


def _staged_files(root: Path) -> list[Path]:
    return list(root.glob("/".join(f"{c}=*" for c in PARTITION_COLUMNS) + f"/{STAGED}*"))


def _delete_staged(root: Path, paths: list[Path]) -> None:
    """Delete staged files of a write that did not commit, and the folders it left empty."""
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in sorted({p for path in paths for p in path.parents if p != root and root in p.parents},
                         reverse=True):
        with contextlib.suppress(OSError):  # not empty
            folder.rmdir()


def _settled(root: Path) -> tuple[str, bool] | None:
    """The store's last write once it is applied, applying it if its writer died doing so."""
    while True:
        journal = _load_journal(root)
        if journal is None or journal["done"]:
            return _state(journal)
        try:  # its writer is applying it (and holds the lock) or was killed doing so
            with writers_lock(root).acquire(timeout=0.05):
                _complete(root)
        except Timeout:
            pass


def _state(journal: dict[str, Any] | None) -> tuple[str, bool] | None:
    return None if journal is None else (journal["id"], journal["done"])


def _consistently(root: Path, read: Callable[[], _T]) -> _T:
    """``read()`` the store as one write left it: again if a write committed meanwhile.

    After two such tries the read takes the writers' lock, so writes in a row cannot starve it.
    """
    for _ in range(_READ_TRIES):
        before = _settled(root)
        try:
            result = read()
        except (DataValidationError, OSError):
            if _state(_load_journal(root)) != before:
                continue  # a file moved or vanished under the read
            raise
        if _state(_load_journal(root)) == before:
            return result
    with writers_lock(root).acquire(poll_interval=0.005):
        _complete(root)
        return read()


def _open(root: str | Path) -> ds.Dataset:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"metrics dataset {path} does not exist or is not a directory")
    dataset = ds.dataset(
        str(path),
        # Given a schema, Arrow opens no file while listing: otherwise it reads the first
        # file's footer, and one corrupt file would break queries of every other partition.
        schema=DATASET_SCHEMA,
        format="parquet",
        partitioning=PARTITIONING,
        exclude_invalid_files=False,
        ignore_prefixes=[".", "_"],
    )
    return dataset


def _partition_filter(
    service: str | None, metric: str | None, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> ds.Expression | None:
    parts = []
    if service is not None:
        parts.append(ds.field(SERVICE) == service)
    if metric is not None:
        parts.append(ds.field(METRIC) == metric)
    # ISO dates compare correctly as strings, which lets Arrow prune day partitions.
    if start is not None:
        parts.append(ds.field(DATE) >= start.strftime("%Y-%m-%d"))
    if end is not None:
        parts.append(ds.field(DATE) <= end.strftime("%Y-%m-%d"))
    if not parts:
        return None
    expression = parts[0]
    for part in parts[1:]:
        expression = expression & part
    return expression


def _utc(value: str | pd.Timestamp | None, name: str) -> pd.Timestamp | None:
    """``value`` in UTC; a time without a zone is refused (the store holds UTC only)."""
    return None if value is None else parse_timestamp(value, name=name)


def iter_files(
    root: str | Path,
    *,
    service: str | None = None,
    metric: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Iterator[str]:
    """Paths of the Parquet files a query would read (only the matching partitions).

    The paths are those of the last write that committed when the listing started.
    """
    expression = _partition_filter(service, metric, _utc(start, "start"), _utc(end, "end"))
    _settled(Path(root))
    for fragment in _open(root).get_fragments(filter=expression):
        yield fragment.path


def _read_file(path: str, partition: dict[str, str]) -> pd.DataFrame:
    try:
        table = ds.dataset(path, format="parquet").to_table()
    except (pa.ArrowInvalid, OSError) as error:
        raise DataValidationError(f"not a readable Parquet file ({error})", file=path) from error
    frame = table.to_pandas()
    for column in (SERVICE, METRIC):
        if column not in frame.columns and column in partition:
            frame[column] = partition[column]
    return validate_frame(frame, file=path)


def read_dataset(
    root: str | Path,
    *,
    service: str | None = None,
    metric: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Read the rows of ``root`` that match the query, validated and sorted.

    ``start`` is inclusive, ``end`` exclusive; both must carry a timezone.
    Only the partitions that can hold matching rows are opened.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a directory.
    DataValidationError
        A file is unreadable or breaks the schema (the error names it), or a
        timestamp is stored twice across files.
    """
    start_utc, end_utc = _utc(start, "start"), _utc(end, "end")
    expression = _partition_filter(service, metric, start_utc, end_utc)

    def read_files() -> list[pd.DataFrame]:
        frames = []
        for fragment in _open(root).get_fragments(filter=expression):
            partition = ds.get_partition_keys(fragment.partition_expression)
            frames.append(_read_file(fragment.path, partition))
        return frames

    frames = _consistently(Path(root), read_files)
    if not frames:
        return validate_frame(
            pd.DataFrame({TIMESTAMP: pd.Series([], dtype="datetime64[ns, UTC]"), SERVICE: [], METRIC: [], VALUE: []})
        )
    frame = pd.concat(frames, ignore_index=True)
    if start_utc is not None:
        frame = frame[frame[TIMESTAMP] >= start_utc]
    if end_utc is not None:
        frame = frame[frame[TIMESTAMP] < end_utc]
    frame = frame.sort_values([SERVICE, METRIC, TIMESTAMP], kind="stable").reset_index(drop=True)
    return validate_frame(frame, file=str(root))


def list_series(root: str | Path) -> list[tuple[str, str]]:
    """The ``(service, metric)`` pairs stored under ``root``, from directory names only."""

    def list_pairs() -> list[tuple[str, str]]:
        pairs = set()
        for fragment in _open(root).get_fragments():
            keys = ds.get_partition_keys(fragment.partition_expression)
            pairs.add((keys[SERVICE], keys[METRIC]))
        return sorted(pairs)

    return _consistently(Path(root), list_pairs)
