"""Validation of long-format metric frames.

Every frame that enters the system passes through :func:`validate_frame`. It
either returns a normalised frame (UTC ``datetime64[ns]`` timestamps, float64
values, string service/metric) or raises :class:`DataValidationError` naming
the file, column and row at fault. Nothing is dropped or coerced silently:
NaN values are allowed (they mark gaps), but a value that is not a number is
an error.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd

from features.schema import (
    INCIDENT,
    IS_ANOMALY,
    METRIC,
    REQUIRED_COLUMNS,
    SERVICE,
    TIMESTAMP,
    VALUE,
    DataValidationError,
    first_bad_row,
)
from features.timeparse import parse_timestamps

_log = logging.getLogger(__name__)

DuplicatePolicy = Literal["error", "first", "last", "mean"]


def parse_values(raw: pd.Series, *, file: str | None = None, column: str = VALUE) -> pd.Series:
    """Parse a value column to float64; empty cells become NaN, text is an error."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise DataValidationError("values are booleans, not numbers", file=file, column=column, row=0)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        return raw.astype("float64")
    numbers = pd.to_numeric(raw, errors="coerce")
    text = raw.astype("string").str.strip()
    bad = numbers.isna() & text.notna() & (text != "") & ~text.str.lower().isin(["nan", "null"])
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(
            f"value {raw.iloc[position]!r} is not a number",
            file=file,
            column=column,
            row=first_bad_row(bad, raw.index),
        )
    return numbers.astype("float64")


def validate_frame(
    frame: pd.DataFrame,
    *,
    file: str | None = None,
    naive_timestamps: Literal["utc", "error"] = "error",
    duplicates: DuplicatePolicy = "error",
) -> pd.DataFrame:
    """Check a long-format frame and return it normalised and sorted.

    Parameters
    ----------
    frame
        Rows with at least ``timestamp, service, metric, value``.
    file
        Where the rows came from, for error messages.
    naive_timestamps
        ``"utc"`` to read zone-less timestamps as UTC, ``"error"`` to refuse them.
    duplicates
        What to do with two rows of one series at the same timestamp:
        ``"error"`` (default) refuses them; ``"first"``, ``"last"`` or
        ``"mean"`` keep one row and log how many were merged.

    Returns
    -------
    pandas.DataFrame
        Sorted by service, metric, timestamp, with a fresh RangeIndex.

    Raises
    ------
    DataValidationError
        Missing column, unparsable timestamp or value, timestamps out of order
        or duplicated within a series. Rows are numbered as in the input.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {missing}; found {list(frame.columns)}",
            file=file,
            column=missing[0],
        )
    out = frame.reset_index(drop=True)
    for column in (SERVICE, METRIC):
        empty = out[column].isna() | (out[column].astype("string").str.strip() == "")
        if empty.any():
            raise DataValidationError(
                "empty name", file=file, column=column, row=first_bad_row(empty, out.index)
            )
        out[column] = out[column].astype("string").astype(object).astype(str)
    out[TIMESTAMP] = parse_timestamps(out[TIMESTAMP], file=file, naive=naive_timestamps)
    out[VALUE] = parse_values(out[VALUE], file=file)
    if IS_ANOMALY in out.columns:
        out[IS_ANOMALY] = out[IS_ANOMALY].fillna(False).astype(bool)
    if INCIDENT in out.columns:
        out[INCIDENT] = out[INCIDENT].fillna("").astype(str)

    keys = [SERVICE, METRIC]
    previous = out.groupby(keys, sort=False)[TIMESTAMP].shift()
    backwards = (out[TIMESTAMP] < previous).to_numpy()
    if backwards.any():
        row = first_bad_row(backwards, out.index)
        raise DataValidationError(
            f"timestamp {out[TIMESTAMP].iloc[row]} is earlier than the row before it in series "
            f"{out[SERVICE].iloc[row]}/{out[METRIC].iloc[row]}; rows of a series must be in time order",
            file=file,
            column=TIMESTAMP,
            row=row,
        )
    repeated = (out[TIMESTAMP] == previous).to_numpy()
    if repeated.any():
        if duplicates == "error":
            row = first_bad_row(repeated, out.index)
            raise DataValidationError(
                f"timestamp {out[TIMESTAMP].iloc[row]} appears twice in series "
                f"{out[SERVICE].iloc[row]}/{out[METRIC].iloc[row]}",
                file=file,
                column=TIMESTAMP,
                row=row,
            )
        out = merge_duplicates(out, duplicates)
    return out.sort_values([*keys, TIMESTAMP], kind="stable").reset_index(drop=True)


def merge_duplicates(frame: pd.DataFrame, policy: DuplicatePolicy) -> pd.DataFrame:
    """Collapse rows of one series that share a timestamp, by ``policy``."""
    keys = [SERVICE, METRIC, TIMESTAMP]
    n_before = len(frame)
    if policy in ("first", "last"):
        out = frame.drop_duplicates(keys, keep=policy)
    elif policy == "mean":
        aggregations = {c: "first" for c in frame.columns if c not in (*keys, VALUE)}
        aggregations[VALUE] = "mean"
        if IS_ANOMALY in frame.columns:
            aggregations[IS_ANOMALY] = "max"
        out = frame.groupby(keys, sort=False, as_index=False).agg(aggregations)
    else:
        raise ValueError(f"duplicates must be one of error, first, last, mean; got {policy!r}")
    _log.warning(
        "merged %d rows that repeated a timestamp (policy %r)", n_before - len(out), policy
    )
    return out.reset_index(drop=True)
