"""Reading ``timestamp,value`` CSV files (such as the NAB corpus) and their label windows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from features.schema import (
    INCIDENT,
    IS_ANOMALY,
    METRIC,
    SERVICE,
    TIMESTAMP,
    VALUE,
    DataValidationError,
)
from features.timeparse import parse_timestamp
from features.validation import DuplicatePolicy, validate_frame


def read_value_csv(
    path: str | Path,
    *,
    service: str | None = None,
    metric: str | None = None,
    duplicates: DuplicatePolicy = "error",
) -> pd.DataFrame:
    """Read a ``timestamp,value`` CSV into the long format.

    Zone-less timestamps are read as UTC. ``service`` defaults to the parent
    folder's name and ``metric`` to the file's stem, so
    ``realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv`` becomes service
    ``realAWSCloudwatch``, metric ``ec2_cpu_utilization_24ae8d``.
    """
    return value_frame(path, read_csv_text(path), service=service, metric=metric,
                       duplicates=duplicates)


def read_csv_text(path: str | Path) -> pd.DataFrame:
    """A ``timestamp,value`` CSV's cells as text, its two columns checked to be there."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataValidationError(f"not a readable CSV file ({error})", file=str(path)) from error
    for column in (TIMESTAMP, VALUE):
        if column not in raw.columns:
            raise DataValidationError(
                f"missing column {column!r}; a CSV needs a header 'timestamp,value', found {list(raw.columns)}",
                file=str(path),
                column=column,
            )
    return raw


def value_frame(
    path: str | Path,
    raw: pd.DataFrame,
    *,
    service: str | None = None,
    metric: str | None = None,
    duplicates: DuplicatePolicy = "error",
) -> pd.DataFrame:
    """Rows of :func:`read_csv_text` (all, or some) in the long format, as :func:`read_value_csv`."""
    path = Path(path)
    frame = pd.DataFrame(
        {
            TIMESTAMP: raw[TIMESTAMP].to_numpy(),
            SERVICE: service or path.parent.name or "default",
            METRIC: metric or path.stem,
            VALUE: raw[VALUE].to_numpy(),
        }
    )
    return validate_frame(frame, file=str(path), naive_timestamps="utc", duplicates=duplicates)


def load_windows(path: str | Path) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """Read a NAB-style windows file: ``{"folder/file.csv": [[start, end], ...]}``, times in UTC."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataValidationError(f"not valid JSON ({error})", file=str(path)) from error
    if not isinstance(raw, dict):
        raise DataValidationError("expected an object mapping file names to windows", file=str(path))
    windows = {}
    for key, spans in raw.items():
        parsed = []
        for i, span in enumerate(spans):
            if not (isinstance(span, list | tuple) and len(span) == 2):
                raise DataValidationError(
                    f"window {i} of {key!r} is {span!r}; expected [start, end]", file=str(path)
                )
            # NAB writes its windows without a zone, in UTC.
            parsed.append(tuple(parse_timestamp(s, name=f"window {i} of {key!r}", naive="utc")
                                for s in span))
        windows[key] = parsed
    return windows


def windows_for(path: str | Path, windows: dict[str, list]) -> list | None:
    """The windows of ``path``, matched by ``folder/file.csv`` or, failing that, by file name."""
    path = Path(path)
    key = f"{path.parent.name}/{path.name}"
    if key in windows:
        return windows[key]
    matches = [v for k, v in windows.items() if Path(k).name == path.name]
    return matches[0] if len(matches) == 1 else None


def label_windows(frame: pd.DataFrame, spans: list[tuple[pd.Timestamp, pd.Timestamp]]) -> pd.DataFrame:
    """Mark rows inside any ``[start, end]`` span as anomalous (kind ``"window"``)."""
    inside = pd.Series(False, index=frame.index)
    for start, end in spans:
        inside |= (frame[TIMESTAMP] >= start) & (frame[TIMESTAMP] <= end)
    out = frame.copy()
    out[IS_ANOMALY] = inside.to_numpy()
    out[INCIDENT] = ["window" if x else "" for x in inside]
    return out
