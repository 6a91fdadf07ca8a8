"""Causal feature matrices for predicting each point of a series from its past.

Row ``t`` of :func:`build_lag_features` describes what was known just before
``t``: the previous values (lags), statistics of the last few values, and the
calendar position of ``t`` itself. No feature of row ``t`` uses ``y_t`` or any
later value, so a model trained on these rows can score a live stream.

Lags and windows count positions, not durations: the series is expected on a
regular grid (resample first), with NaN marking a gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

_DAY_NS = 86_400 * 10**9
_TWO_PI = 2.0 * np.pi

#: Calendar columns, always present and never NaN.
CALENDAR_COLUMNS: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos", "is_weekend")
#: Rolling statistics computed for every window length.
ROLLING_STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max")
#: How each rolling statistic reduces a window (``std`` is the population one, ddof 0).
_REDUCERS = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max}


def lag_column(lag: int) -> str:
    """Name of the column holding ``y_{t-lag}``."""
    return f"lag_{lag}"


def rolling_column(statistic: str, length: int) -> str:
    """Name of the column holding ``statistic`` over ``y_{t-length} … y_{t-1}``."""
    return f"{statistic}_{length}"


def feature_columns(n_lags: int, rolling_lengths: Sequence[int]) -> list[str]:
    """Column names of :func:`build_lag_features`, in order."""
    columns = [lag_column(k) for k in range(1, n_lags + 1)]
    columns += [rolling_column(s, w) for w in rolling_lengths for s in ROLLING_STATISTICS]
    return columns + list(CALENDAR_COLUMNS)


def carry_forward(values: np.ndarray, limit: int) -> np.ndarray:
    """Fill runs of at most ``limit`` missing points with the last observed value.

    Causal: a filled point takes a value from before it, never after. Longer
    gaps stay entirely NaN (not partly filled), as do missing points before the
    first observation.
    """
    x = np.asarray(values, dtype="float64")
    if limit <= 0 or x.size == 0:
        return x.copy()
    missing = np.isnan(x)
    if not missing.any():
        return x.copy()
    positions = np.where(~missing, np.arange(x.size), -1)
    last_seen = np.maximum.accumulate(positions)
    # Length of the NaN run each missing point belongs to.
    run_id = np.cumsum(~missing)
    run_length = np.bincount(run_id, weights=missing)[run_id]
    fillable = missing & (last_seen >= 0) & (run_length <= limit)
    out = x.copy()
    out[fillable] = x[last_seen[fillable]]
    return out


def _past_matrix(values: np.ndarray, length: int) -> np.ndarray:
    """Row ``t`` holds ``values[t-length : t]`` (NaN before the start): the past of ``t``."""
    padded = np.concatenate([np.full(length, np.nan), values])
    return np.lib.stride_tricks.sliding_window_view(padded, length)[: values.size]


def calendar_features(index: pd.DatetimeIndex) -> dict[str, np.ndarray]:
    """Time of day and day of week of each timestamp, in UTC, as cycles; a weekend flag.

    A zone-less index is read as UTC. ``hour_*`` use the time of day to the
    nanosecond, so 06:00 is a quarter turn; ``dow_*`` use the weekday (Monday
    = 0) only; ``is_weekend`` is 1.0 on Saturday and Sunday.
    """
    if index.tz is not None:
        index = index.tz_convert("UTC")
    stamps = index.as_unit("ns").asi8
    day_fraction = (stamps % _DAY_NS) / _DAY_NS
    # 1970-01-01 was a Thursday: day 0 is weekday 3 with Monday = 0.
    weekday = ((stamps // _DAY_NS) + 3) % 7
    return {
        "hour_sin": np.sin(_TWO_PI * day_fraction),
        "hour_cos": np.cos(_TWO_PI * day_fraction),
        "dow_sin": np.sin(_TWO_PI * weekday / 7.0),
        "dow_cos": np.cos(_TWO_PI * weekday / 7.0),
        "is_weekend": (weekday >= 5).astype("float64"),
    }


def build_lag_features(
    series: pd.Series,
    *,
    n_lags: int = 12,
    rolling_lengths: Sequence[int] = (6, 24),
    fill_limit: int = 0,
) -> pd.DataFrame:
    """A causal feature matrix: one row per point, built from the points before it.

    Parameters
    ----------
    series
        Values on a regular grid, indexed by a ``DatetimeIndex``; NaN is a gap.
    n_lags
        Columns ``lag_1 … lag_{n_lags}`` hold ``y_{t-1} … y_{t-n_lags}``.
    rolling_lengths
        For each length ``w``, columns ``mean_w``, ``std_w`` (population, ddof 0),
        ``min_w`` and ``max_w`` over ``y_{t-w} … y_{t-1}``: the window ends at
        ``t-1`` and never includes ``y_t``.
    fill_limit
        Before the features are computed, gaps of at most ``fill_limit`` points
        are filled with the last value before them (causal). 0 keeps every gap.

    Returns
    -------
    pandas.DataFrame
        Same index as ``series``; columns from :func:`feature_columns`. A lag is
        NaN where its point is missing or before the start; a rolling statistic
        is NaN unless all ``w`` points of its window are present. Calendar
        columns (UTC) are always present.

    Raises
    ------
    TypeError
        ``series`` is not a Series on a ``DatetimeIndex``.
    ValueError
        ``n_lags`` < 1, a rolling length < 2 or repeated, or ``fill_limit`` < 0.
    """
    if not isinstance(series, pd.Series):
        raise TypeError(f"series must be a pandas Series, got {type(series).__name__}")
    if not isinstance(series.index, pd.DatetimeIndex):
        raise TypeError(f"series must have a DatetimeIndex, got {type(series.index).__name__}")
    if n_lags < 1:
        raise ValueError(f"n_lags={n_lags} must be >= 1")
    lengths = [int(w) for w in rolling_lengths]
    if any(w < 2 for w in lengths) or len(set(lengths)) != len(lengths):
        raise ValueError(
            f"rolling_lengths={list(rolling_lengths)}; lengths must be distinct and >= 2"
        )
    if fill_limit < 0:
        raise ValueError(f"fill_limit={fill_limit} must be >= 0")

    matrix = lag_feature_matrix(series.to_numpy(dtype="float64"), series.index,
                                n_lags=n_lags, rolling_lengths=lengths, fill_limit=fill_limit)
    return pd.DataFrame(matrix, index=series.index, columns=feature_columns(n_lags, lengths))


def lag_feature_matrix(
    values: np.ndarray,
    index: pd.DatetimeIndex,
    *,
    n_lags: int,
    rolling_lengths: Sequence[int],
    fill_limit: int,
) -> np.ndarray:
    """The numbers of :func:`build_lag_features`, as one array (columns in the same order).

    No argument checks and no DataFrame: the scoring path calls this for every
    window, where building and slicing a DataFrame costs more than the numbers.
    """
    x = carry_forward(values, fill_limit)
    n_columns = n_lags + len(ROLLING_STATISTICS) * len(rolling_lengths) + len(CALENDAR_COLUMNS)
    out = np.empty((x.size, n_columns))
    # Column k-1 holds y_{t-k}: the past matrix's columns reversed.
    out[:, :n_lags] = _past_matrix(x, n_lags)[:, ::-1]
    column = n_lags
    for w in rolling_lengths:
        past = _past_matrix(x, w)
        # numpy's reductions propagate NaN: a window with any gap gives NaN, as documented.
        for statistic in ROLLING_STATISTICS:
            out[:, column] = _REDUCERS[statistic](past, axis=1)
            column += 1
    for calendar in calendar_features(index).values():
        out[:, column] = calendar
        column += 1
    return out
