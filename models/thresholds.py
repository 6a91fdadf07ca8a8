"""Threshold detectors: the baselines every other detector is compared with.

* :class:`StaticThresholdDetector` — fixed bounds, configured or learned from
  the extreme quantiles of the history.
* :class:`DynamicThresholdDetector` — a robust z-score of the residual against
  a seasonal profile (time of day, or time of week) learned from history.
* :class:`WindowBaselineDetector` — no history at all: each point is compared
  with the robust statistics of the window's own past. It serves series the
  model has never seen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from features.series import infer_step
from models.base import (
    Z_AT_THRESHOLD,
    Detector,
    DetectorConfig,
    register,
)

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class StaticThresholdConfig(DetectorConfig):
    """Fixed bounds.

    Parameters
    ----------
    lower, upper
        Bounds set by hand (for example ``upper=90`` for CPU percent); a bound
        left as None is learned from the history.
    quantile
        Learned bounds sit at the ``1 - quantile`` and ``quantile`` quantiles
        of the history, widened by ``margin`` times the distance between them.
    """

    lower: float | None = None
    upper: float | None = None
    quantile: float = 0.999
    margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0.5 < self.quantile < 1.0:
            raise ValueError(f"quantile={self.quantile} must lie in (0.5, 1)")
        if self.margin < 0:
            raise ValueError(f"margin={self.margin} must be >= 0")
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise ValueError(f"lower={self.lower} must be below upper={self.upper}")


@register
class StaticThresholdDetector(Detector):
    """Scores how far a value lies toward or beyond fixed bounds.

    The deviation is measured from the history's median: a value on a bound
    scores exactly the default threshold (0.99), beyond it more, and the score
    rises toward 1 with the distance past the bound. Both directions are
    anomalous.
    """

    name: ClassVar[str] = "static_threshold"
    config_class = StaticThresholdConfig
    # Bounds are the statement: a value on a bound scores 0.99 by construction.
    calibrated: ClassVar[bool] = False
    config: StaticThresholdConfig

    def _fit(self, history: pd.Series) -> None:
        values = history.dropna().to_numpy()
        q = self.config.quantile
        low_q, high_q = np.quantile(values, [1 - q, q])
        spread = (high_q - low_q) * self.config.margin
        self.median_ = float(np.median(values))
        epsilon = 1e-6 * (abs(self.median_) + 1.0)
        # A history that never moved has no spread: a learned bound then sits a hair outside
        # the median, so the usual value scores 0 and any real change scores near 1.
        learned_lower = min(low_q - spread, self.median_ - epsilon)
        learned_upper = max(high_q + spread, self.median_ + epsilon)
        self.lower_ = float(self.config.lower if self.config.lower is not None else learned_lower)
        self.upper_ = float(self.config.upper if self.config.upper is not None else learned_upper)
        # Keep the median strictly inside the bounds so the scale below is never zero.
        self.center_ = float(np.clip(self.median_, self.lower_ + epsilon, self.upper_ - epsilon))
        if self.lower_ >= self.upper_:
            self.lower_, self.upper_ = self.center_ - epsilon, self.center_ + epsilon

    def _score_z(self, window: pd.Series) -> np.ndarray:
        x = window.to_numpy()
        above = (x - self.center_) / (self.upper_ - self.center_)
        below = (self.center_ - x) / (self.center_ - self.lower_)
        return Z_AT_THRESHOLD * np.maximum(np.maximum(above, below), 0.0)

    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(window)
        return np.full(n, self.lower_), np.full(n, self.upper_)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        keys = ("median_", "lower_", "upper_", "center_")
        return {k: getattr(self, k) for k in keys}, {}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        for key, value in params.items():
            setattr(self, key, float(value))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicThresholdConfig(DetectorConfig):
    """Seasonal profile plus rolling robust z-score.

    Parameters
    ----------
    season
        ``"auto"`` picks the profile that predicts held-out days best (see
        :func:`detect_season`); ``"none"`` (flat), ``"1D"`` (time of day),
        ``"workweek"`` (time of day, weekdays apart from weekends) or ``"7D"``
        (time of week) force one.
    slot_s
        Length in seconds of a profile slot (300: the profile has one median per
        5 minutes of the day or week); never finer than the data's own step.
    window_length
        Points of past residuals whose median tracks the current level.
    min_periods
        Weight, in points, of the trained level against the window's recent level:
        with few past points in a window the trained level dominates.
    min_improvement
        In ``"auto"``, how much a season must shrink the held-out residual
        spread, as a fraction, to be preferred to no season.
    """

    season: str = "auto"
    slot_s: int = 300
    window_length: int = 60
    min_periods: int = 10
    min_improvement: float = 0.1

    def __post_init__(self) -> None:
        if self.season not in ("auto", *SEASONS):
            raise ValueError(f"season={self.season!r}; accepted: 'auto', {', '.join(SEASONS)}")
        if not 1 <= self.slot_s <= 86_400:
            raise ValueError(f"slot_s={self.slot_s} must lie in [1, 86400]")
        if self.window_length < 2:
            raise ValueError(f"window_length={self.window_length} must be >= 2")
        if not 1 <= self.min_periods <= self.window_length:
            raise ValueError(
                f"min_periods={self.min_periods} must lie in [1, window_length={self.window_length}]"
            )
        if not 0.0 <= self.min_improvement < 1.0:
            raise ValueError(f"min_improvement={self.min_improvement} must lie in [0, 1)")


def _causal_rolling_median(values: np.ndarray, length: int, min_periods: int) -> np.ndarray:
    """Median of the ``length`` points before each point (the point itself excluded)."""
    past = pd.Series(values).shift(1)
    return past.rolling(length, min_periods=min_periods).median().to_numpy()


def _causal_rolling_median_mad(
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


def held_out_residuals(
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
    config = DynamicThresholdConfig(min_improvement=min_improvement)
    values = history.to_numpy(dtype="float64")
    if np.isfinite(values).sum() < 4 or np.nanstd(values) == 0:
        return "none"
    season, _ = choose_season(history, step, config)
    return season


@register
class DynamicThresholdDetector(Detector):
    """Robust z-score of a value's residual against a seasonal profile.

    The residual is the value minus the profile's median for its slot of the
    day, of the weekday or weekend day, or of the week; the rolling median of
    past residuals follows the current level, and the spread of residuals on
    held-out days scales the deviation. Both directions are anomalous; 0.99
    means a 2.58-sigma deviation.
    """

    name: ClassVar[str] = "dynamic_threshold"
    config_class = DynamicThresholdConfig
    config: DynamicThresholdConfig
    min_history_length: ClassVar[int] = 10

    @property
    def trained_step(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.step_s_)

    def _slots(self, index: pd.DatetimeIndex) -> np.ndarray:
        slots, _ = slot_index(index.asi8, self.season_, self.slot_ns_)
        return slots

    def _fit(self, history: pd.Series) -> None:
        config = self.config
        step = infer_step(history.index)
        stamps = history.index.asi8
        values = history.to_numpy()
        if np.nanstd(values) == 0:
            season, held_out = "none", values - np.nanmedian(values)
        else:
            season, held_out = choose_season(history, step, config)
        self.season_ = season
        self.slot_ns_ = slot_length_ns(step, config.slot_s)
        self.profile_ = seasonal_profile(stamps, values, season, self.slot_ns_)
        self.step_s_ = float(step.total_seconds())
        self.level_ = float(np.nanmedian(values - self.profile_[self._slots(history.index)]))
        self.scale_ = robust_scale(held_out)
        self._held_out_z = np.abs(held_out) / self.scale_

    def _levels(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        baseline = self.profile_[self._slots(window.index)]
        residuals = window.to_numpy() - baseline
        level = recent_level(residuals, self.config.window_length, self.config.min_periods,
                              self.level_)
        return baseline + level, residuals - level

    def _score_z(self, window: pd.Series) -> np.ndarray:
        _, deviation = self._levels(window)
        return np.abs(deviation) / self.scale_

    def _score_and_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        expected, deviation = self._levels(window)
        half = raw_threshold * self.scale_
        return np.abs(deviation) / self.scale_, expected - half, expected + half

    def _training_raw_scores(self, history: pd.Series) -> np.ndarray:
        # Held-out deviations: in-sample ones would make every new day look rare.
        raw, self._held_out_z = self._held_out_z, None
        return raw

    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        expected, _ = self._levels(window)
        half = raw_threshold * self.scale_
        return expected - half, expected + half

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {
            "season_": self.season_,
            "step_s_": self.step_s_,
            "slot_ns_": self.slot_ns_,
            "level_": self.level_,
            "scale_": self.scale_,
        }
        return params, {"profile_": self.profile_}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.season_ = str(params["season_"])
        self.step_s_ = float(params["step_s_"])
        self.slot_ns_ = int(params["slot_ns_"])
        self.level_ = float(params["level_"])
        self.scale_ = float(params["scale_"])
        self.profile_ = np.asarray(arrays["profile_"], dtype="float64")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WindowBaselineConfig(DetectorConfig):
    """Robust z-score against the window's own recent past.

    ``window_length`` past points give the median and the spread; the first
    ``min_periods`` points of a window have too little past and score 0.
    """

    window_length: int = 60
    min_periods: int = 20

    def __post_init__(self) -> None:
        if self.window_length < 2:
            raise ValueError(f"window_length={self.window_length} must be >= 2")
        if not 2 <= self.min_periods <= self.window_length:
            raise ValueError(
                f"min_periods={self.min_periods} must lie in [2, window_length={self.window_length}]"
            )


@register
class WindowBaselineDetector(Detector):
    """The detector for a series with no trained model: it learns nothing from history.

    Each point is compared with the median and the median absolute deviation
    of the points before it in the same window. It is causal and needs no
    fit; ``fit`` only validates its input so that it honours the contract.
    """

    name: ClassVar[str] = "window_baseline"
    config_class = WindowBaselineConfig
    calibrated: ClassVar[bool] = False  # it learns nothing, so it has nothing to calibrate on
    config: WindowBaselineConfig

    def _fit(self, history: pd.Series) -> None:
        self.n_history_ = len(history)

    @property
    def is_fitted(self) -> bool:
        return True

    def _stats(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        x = window.to_numpy()
        length, periods = self.config.window_length, self.config.min_periods
        median, mad = _causal_rolling_median_mad(x, length, periods)
        spread = _MAD_TO_SIGMA * mad
        floor = 1e-6 * (np.abs(median) + 1.0)
        return median, np.fmax(spread, floor)

    def _score_z(self, window: pd.Series) -> np.ndarray:
        median, spread = self._stats(window)
        z = np.abs(window.to_numpy() - median) / spread
        return np.where(np.isnan(median), 0.0, z)

    def _score_and_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        median, spread = self._stats(window)
        z = np.where(np.isnan(median), 0.0, np.abs(window.to_numpy() - median) / spread)
        return z, median - raw_threshold * spread, median + raw_threshold * spread

    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        median, spread = self._stats(window)
        return median - raw_threshold * spread, median + raw_threshold * spread

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n_history_": getattr(self, "n_history_", 0)}, {}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_history_ = int(params.get("n_history_", 0))
