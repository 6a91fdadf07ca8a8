"""The Parquet metrics store: hive-partitioned by ``service/metric/date``.

A dataset is a directory such as::

    data/service=checkout/metric=cpu_utilization/date=2026-01-05/part-<uuid>-0.parquet

Reads go through :mod:`pyarrow.dataset`, so a query for one service, metric
and time range opens only the files of those partitions. Every file read is
validated on its own, so an error names the file and the row inside it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

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
from features.validation import validate_frame

_log = logging.getLogger(__name__)

PARTITIONING = ds.partitioning(
    pa.schema([(c, pa.string()) for c in PARTITION_COLUMNS]), flavor="hive"
)
#: Stored columns plus the partition keys; every file is still read and checked on its own.
DATASET_SCHEMA = pa.schema(
    [f for f in ARROW_SCHEMA if f.name not in PARTITION_COLUMNS]
    + [pa.field(c, pa.string()) for c in PARTITION_COLUMNS]
)


def write_dataset(
    frame: pd.DataFrame,
    root: str | Path,
    *,
    existing: Literal["append", "replace"] = "append",
) -> int:
    """Validate ``frame`` and write it under ``root``, partitioned by service, metric and date.

    Parameters
    ----------
    existing
        ``"append"`` adds new files beside any already there (reading the
        dataset later refuses timestamps stored twice); ``"replace"`` deletes
        the partitions being written first, so writing the same day again is
        idempotent.

    Returns
    -------
    int
        The number of rows written.
    """
    clean = validate_frame(frame)
    columns = [f.name for f in ARROW_SCHEMA if f.name in clean.columns]
    table_frame = clean[columns].copy()
    table_frame[DATE] = clean[TIMESTAMP].dt.strftime("%Y-%m-%d")
    schema = pa.schema([ARROW_SCHEMA.field(c) for c in columns] + [pa.field(DATE, pa.string())])
    table = pa.Table.from_pandas(table_frame, schema=schema, preserve_index=False)
    behaviour = "delete_matching" if existing == "replace" else "overwrite_or_ignore"
    if existing not in ("append", "replace"):
        raise ValueError(f"existing must be 'append' or 'replace', got {existing!r}")
    ds.write_dataset(
        table,
        str(root),
        format="parquet",
        partitioning=PARTITIONING,
        basename_template=f"part-{uuid.uuid4().hex}-{{i}}.parquet",
        existing_data_behavior=behaviour,
        # Without this Arrow may interleave rows from its threads, breaking time order.
        preserve_order=True,
    )
    return len(clean)


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
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{name}={value!r} has no timezone; pass a UTC time such as '2026-01-05T00:00Z'")
    return stamp.tz_convert("UTC")


def iter_files(
    root: str | Path,
    *,
    service: str | None = None,
    metric: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Iterator[str]:
    """Paths of the Parquet files a query would read (only the matching partitions)."""
    expression = _partition_filter(service, metric, _utc(start, "start"), _utc(end, "end"))
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
    frames = []
    for fragment in _open(root).get_fragments(filter=expression):
        partition = ds.get_partition_keys(fragment.partition_expression)
        frames.append(_read_file(fragment.path, partition))
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
    pairs = set()
    for fragment in _open(root).get_fragments():
        keys = ds.get_partition_keys(fragment.partition_expression)
        pairs.add((keys[SERVICE], keys[METRIC]))
    return sorted(pairs)
