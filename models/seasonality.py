"""Seasonal profiles and robust statistics: what the threshold, ARIMA and forecasting models share.

A profile is the median value per slot of a cycle (the day, weekdays apart
from weekends, or the week); :func:`detect_season` and :func:`choose_season`
pick the cycle whose profile predicts held-out cycles best. Everything here is
a pure function of numpy arrays and timestamps in ns.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from models.thresholds import DynamicThresholdConfig

_MAD_TO_SIGMA = 1.4826
_DAY_NS = int(pd.Timedelta("1D").value)
_WEEK_NS = 7 * _DAY_NS
#: Candidate seasons, simplest first. "workweek" is a daily profile for weekdays and another
#: for weekends: most service traffic has that shape, and it needs one weekend, not two weeks.
SEASONS = ("none", "1D", "workweek", "7D")


def robust_scale(values: np.ndarray) -> float:
    """A scale that outliers cannot inflate: 1.4826 × MAD, with floors for flat data.

    A series that never moved in training has MAD 0; the floor then falls back
    to the mean absolute deviation and finally to a tiny fraction of its level,
    so that any real change scores as highly anomalous rather than dividing by 0.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 1.0
    median = np.median(finite)
    mad = _MAD_TO_SIGMA * np.median(np.abs(finite - median))
    if mad > 0:
        return float(mad)
    mean_dev = 1.2533 * np.mean(np.abs(finite - median))
    if mean_dev > 0:
        return float(mean_dev)
    return float(1e-6 * (abs(median) + 1.0))


def _causal_rolling_median(values: np.ndarray, length: int, min_periods: int) -> np.ndarray:
    """Median of the ``length`` points before each point (the point itself excluded)."""
    past = pd.Series(values).shift(1)
    return past.rolling(length, min_periods=min_periods).median().to_numpy()


def causal_rolling_median_mad(
    values: np.ndarray, length: int, min_periods: int
) -> tuple[np.ndarray, np.ndarray]:
    """Median and median absolute deviation of the ``length`` points before each point.

    Both are NaN where fewer than ``min_periods`` of those points are present. The
    deviation is taken from the same past points' median, so it exists as soon as
    the median does.
    """
    n = len(values)
    padded = np.concatenate([np.full(length, np.nan), np.asarray(values, dtype="float64")])
    # Row i holds values[i - length : i]: the past of point i, never the point itself.
    past = np.lib.stride_tricks.sliding_window_view(padded, length)[:n]
    enough = np.count_nonzero(~np.isnan(past), axis=1) >= min_periods
    median = np.full(n, np.nan)
    mad = np.full(n, np.nan)
    if enough.any():
        rows = past[enough]
        median[enough] = np.nanmedian(rows, axis=1)
        mad[enough] = np.nanmedian(np.abs(rows - median[enough, None]), axis=1)
    return median, mad


_MAX_FOLDS = 8
#: A more complex season must shrink the held-out spread by this fraction to be preferred.
_COMPLEXITY_MARGIN = 0.02


def slot_length_ns(step: pd.Timedelta, slot_s: int) -> int:
    """Slot length: ``slot_s`` but no finer than the step, and dividing a day evenly."""
    wanted = max(pd.Timedelta(seconds=slot_s), step)
    n_per_day = max(1, int(pd.Timedelta("1D") / wanted))
    return _DAY_NS // n_per_day


def _is_weekend(stamps_ns: np.ndarray) -> np.ndarray:
    # 1970-01-01 was a Thursday: day 0 is weekday 3 with Monday = 0.
    return ((stamps_ns // _DAY_NS) + 3) % 7 >= 5


def slot_index(stamps_ns: np.ndarray, season: str, slot_ns: int) -> tuple[np.ndarray, int]:
    """Each timestamp's slot in ``season``'s profile, and the number of slots."""
    per_day = _DAY_NS // slot_ns
    if season == "none":
        return np.zeros(len(stamps_ns), dtype=np.int64), 1
    if season == "1D":
        return (stamps_ns // slot_ns) % per_day, per_day
    if season == "workweek":
        return (stamps_ns // slot_ns) % per_day + per_day * _is_weekend(stamps_ns), 2 * per_day
    if season == "7D":
        return (stamps_ns // slot_ns) % (7 * per_day), 7 * per_day
    raise ValueError(f"season={season!r}; accepted: {SEASONS}")


def _fill_cycle(medians: np.ndarray) -> np.ndarray:
    """Fill empty slots from their neighbours, wrapping around the cycle; smooth lightly."""
    n = len(medians)
    series = pd.Series(medians)
    if series.isna().all():
        return medians
    tripled = pd.concat([series, series, series], ignore_index=True)
    filled = tripled.interpolate(limit_direction="both").to_numpy()[n : 2 * n]
    if n < 3:
        return filled
    padded = pd.Series(np.concatenate([filled[-1:], filled, filled[:1]]))
    return padded.rolling(3, center=True).median().to_numpy()[1:-1]


def seasonal_profile(
    stamps_ns: np.ndarray, values: np.ndarray, season: str, slot_ns: int
) -> np.ndarray:
    """Median value per slot of ``season``; empty slots filled from neighbours, smoothed."""
    slots, n_slots = slot_index(stamps_ns, season, slot_ns)
    frame = pd.DataFrame({"slot": slots, "value": values}).dropna()
    medians = frame.groupby("slot")["value"].median().reindex(range(n_slots)).to_numpy()
    if season != "workweek":
        return _fill_cycle(medians)
    # Weekdays and weekends are two separate daily cycles.
    half = n_slots // 2
    weekdays, weekends = _fill_cycle(medians[:half]), _fill_cycle(medians[half:])
    if np.isnan(weekends).all():
        weekends = weekdays
    if np.isnan(weekdays).all():
        weekdays = weekends
    return np.concatenate([weekdays, weekends])


def recent_level(
    residuals: np.ndarray, length: int, prior_weight: int, prior_level: float
) -> np.ndarray:
    """The current level of the residuals, from the past only.

    The median of the last ``length`` residuals, shrunk toward ``prior_level``
    with a weight of ``prior_weight`` points, so that the start of a window
    (little past) leans on the trained level.
    """
    recent = _causal_rolling_median(residuals, length, 1)
    # Present points among the ``length`` before each point, from a running count.
    seen = np.concatenate([[0], np.cumsum(~np.isnan(residuals))])
    positions = np.arange(len(residuals))
    n_past = (seen[positions] - seen[np.maximum(positions - length, 0)]).astype("float64")
    recent = np.where(np.isnan(recent), prior_level, recent)
    return (n_past * recent + prior_weight * prior_level) / (n_past + prior_weight)


#: Held-out residuals of the latest histories (see :func:`held_out_residuals`).
_HELD_OUT_MEMO: OrderedDict[tuple[bytes, str, int], np.ndarray] = OrderedDict()
_HELD_OUT_MEMO_SIZE = 16
_HELD_OUT_LOCK = threading.Lock()


def held_out_residuals(
    stamps_ns: np.ndarray, values: np.ndarray, season: str, slot_ns: int
) -> np.ndarray:
    """Each point's residual against a profile built without its own cycle (read-only).

    The dynamic threshold and ARIMA fitted on one history both choose its season
    from these residuals; the last few results are kept, keyed by a digest of the
    history, so the second fit does not compute them again.
    """
    digest = hashlib.blake2b(np.ascontiguousarray(stamps_ns, dtype="int64").tobytes(),
                             digest_size=16)
    digest.update(np.ascontiguousarray(values, dtype="float64").tobytes())
    key = (digest.digest(), season, int(slot_ns))
    with _HELD_OUT_LOCK:
        cached = _HELD_OUT_MEMO.get(key)
        if cached is not None:
            _HELD_OUT_MEMO.move_to_end(key)
            return cached
    residuals = _held_out_residuals(stamps_ns, values, season, slot_ns)
    residuals.flags.writeable = False
    with _HELD_OUT_LOCK:
        _HELD_OUT_MEMO[key] = residuals
        while len(_HELD_OUT_MEMO) > _HELD_OUT_MEMO_SIZE:
            _HELD_OUT_MEMO.popitem(last=False)
    return residuals


def _held_out_residuals(
    stamps_ns: np.ndarray, values: np.ndarray, season: str, slot_ns: int
) -> np.ndarray:
    """Each point's residual against a profile built without its own cycle.

    In-sample residuals against a median of a few values per slot are far too
    small (with three cycles, one of every three is exactly the median), which
    would make the learned spread too tight; holding whole cycles (days, or
    weeks for the weekly profile) out gives the spread a new cycle will really
    show. Cycles are grouped into at most eight folds.
    """
    fold_length = _WEEK_NS if season == "7D" else _DAY_NS
    cycle = (stamps_ns - stamps_ns[0]) // fold_length
    n_folds = int(min(_MAX_FOLDS, cycle.max() + 1))
    fold = cycle % n_folds
    residuals = np.full(len(values), np.nan)
    for f in range(n_folds):
        train, test = fold != f, fold == f
        profile = seasonal_profile(stamps_ns[train], values[train], season, slot_ns)
        slots, _ = slot_index(stamps_ns[test], season, slot_ns)
        residuals[test] = values[test] - profile[slots]
    return residuals


def _candidate_seasons(stamps_ns: np.ndarray, step: pd.Timedelta, choice: str) -> list[str]:
    if choice != "auto":
        return [choice]
    span_ns = int(stamps_ns[-1] - stamps_ns[0]) + step.value
    days = np.unique(stamps_ns // _DAY_NS)
    weekend_days = int(_is_weekend(days * _DAY_NS).sum())
    # A season is judged on held-out cycles, so the history must hold two of each kind.
    candidates = ["none"]
    if span_ns >= 2 * _DAY_NS and step.value * 4 <= _DAY_NS:
        candidates.append("1D")
        if weekend_days >= 2 and len(days) - weekend_days >= 2:
            candidates.append("workweek")
    if span_ns >= 2 * _WEEK_NS:
        candidates.append("7D")
    return candidates


def choose_season(
    history: pd.Series, step: pd.Timedelta, config: DynamicThresholdConfig
) -> tuple[str, np.ndarray]:
    """The season whose held-out deviations are tightest, and those deviations."""
    stamps = history.index.as_unit("ns").asi8
    values = history.to_numpy(dtype="float64")
    slot_ns = slot_length_ns(step, config.slot_s)
    chosen: tuple[float, str, np.ndarray] | None = None
    for season in _candidate_seasons(stamps, step, config.season):
        residuals = held_out_residuals(stamps, values, season, slot_ns)
        prior = float(np.nanmedian(residuals)) if np.isfinite(residuals).any() else 0.0
        deviation = residuals - recent_level(
            residuals, config.window_length, config.min_periods, prior
        )
        spread = robust_scale(deviation)
        if chosen is None:
            chosen = (spread, season, deviation)
            continue
        margin = config.min_improvement if chosen[1] == "none" else _COMPLEXITY_MARGIN
        if spread < (1 - margin) * chosen[0]:
            chosen = (spread, season, deviation)
    assert chosen is not None  # _candidate_seasons never returns an empty list
    return chosen[1], chosen[2]


def detect_season(
    history: pd.Series, step: pd.Timedelta, *, min_improvement: float = 0.1
) -> str:
    """The cycle of ``history``: ``"none"``, ``"1D"``, ``"workweek"`` or ``"7D"``.

    Each candidate (a cycle only when the history holds two of it) predicts
    every held-out day (or week) from the others; the smallest robust spread of
    held-out residuals wins. A season must beat "none" by ``min_improvement``
    (a fraction), and a more complex season a simpler one by 2 %.
    """
    from models.thresholds import DynamicThresholdConfig  # the season choice's parameters

    config = DynamicThresholdConfig(min_improvement=min_improvement)
    values = history.to_numpy(dtype="float64")
    if np.isfinite(values).sum() < 4 or np.nanstd(values) == 0:
        return "none"
    season, _ = choose_season(history, step, config)
    return season
