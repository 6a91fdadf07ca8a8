"""From long-format rows to single series: splitting, step inference and resampling.

A *series* here is a ``pandas.Series`` of float64 values indexed by a UTC,
strictly increasing, duplicate-free ``DatetimeIndex``; NaN marks a gap.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from features.schema import IS_ANOMALY, METRIC, SERVICE, TIMESTAMP, VALUE
from features.timeparse import parse_duration

SeriesKey = tuple[str, str]


_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1))


def duration_text(seconds: float | pd.Timedelta) -> str:
    """A duration as Prometheus writes one: ``"1m"``, ``"1h30m"``, ``"15s"``, ``"250ms"``.

    :func:`features.timeparse.parse_duration` reads it back to the same value (to the ms).
    """
    if isinstance(seconds, pd.Timedelta):
        seconds = seconds.total_seconds()
    left = round(float(seconds) * 1000)
    if left <= 0:
        return "0s"
    parts = []
    for unit, size in _DURATION_UNITS:
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


def split_series(frame: pd.DataFrame) -> Iterator[tuple[SeriesKey, pd.DataFrame]]:
    """Yield ``((service, metric), rows)`` for each series of a validated long frame."""
    for (service, metric), rows in frame.groupby([SERVICE, METRIC], sort=True):
        yield (str(service), str(metric)), rows


def to_series(rows: pd.DataFrame) -> pd.Series:
    """The ``value`` column of one series' rows, indexed by timestamp."""
    series = pd.Series(
        rows[VALUE].to_numpy(dtype="float64"),
        index=pd.DatetimeIndex(rows[TIMESTAMP], name=TIMESTAMP),
        name=VALUE,
    )
    return series


def to_labels(rows: pd.DataFrame) -> pd.Series | None:
    """The ``is_anomaly`` column of one series' rows, or None when unlabelled."""
    if IS_ANOMALY not in rows.columns:
        return None
    return pd.Series(
        rows[IS_ANOMALY].to_numpy(dtype=bool),
        index=pd.DatetimeIndex(rows[TIMESTAMP], name=TIMESTAMP),
        name=IS_ANOMALY,
    )


def infer_step(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The typical spacing of ``index``: the median difference between neighbours."""
    if len(index) < 2:
        raise ValueError(f"cannot infer a step from {len(index)} timestamp(s); need at least 2")
    deltas = np.diff(index.as_unit("ns").asi8)
    return pd.Timedelta(int(np.median(deltas)), unit="ns")


def resample_series(series: pd.Series, step: str | pd.Timedelta) -> pd.Series:
    """Average ``series`` into buckets of ``step``; a bucket with no observation stays NaN.

    Buckets are labelled by their left edge, so a point at 10:00:07 with a 10 s
    step lands in the 10:00:00 bucket. Gaps are kept as NaN, never filled. ``step``
    is any duration :func:`features.timeparse.parse_duration` reads.
    """
    delta = parse_duration(step, name="step")
    if not isinstance(series.index, pd.DatetimeIndex):
        raise TypeError(f"series must have a DatetimeIndex, got {type(series.index).__name__}")
    if series.empty:
        return series.astype("float64")
    return series.astype("float64").resample(delta, label="left", closed="left").mean()
