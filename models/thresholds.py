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
_SEASONS = {"1D": pd.Timedelta("1D"), "7D": pd.Timedelta("7D")}


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

    def _expected_range(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
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
        ``"auto"`` detects a daily or weekly cycle from the history's
        autocorrelation; ``"1D"``/``"7D"`` force one; ``"none"`` uses a flat profile.
    profile_slots
        Number of slots the season is divided into (288 = 5-minute slots over a day).
    window_length
        Points of past residuals whose median tracks the current level.
    min_periods
        Weight, in points, of the trained level against the window's recent level:
        with few past points in a window the trained level dominates.
    min_autocorrelation
        Autocorrelation at the season's lag needed to accept it in ``"auto"``.
    """

    season: str = "auto"
    profile_slots: int = 288
    window_length: int = 60
    min_periods: int = 10
    min_autocorrelation: float = 0.3

    def __post_init__(self) -> None:
        if self.season not in ("auto", "none", *_SEASONS):
            raise ValueError(f"season={self.season!r}; accepted: 'auto', 'none', '1D', '7D'")
        if not 1 <= self.profile_slots <= 10_080:
            raise ValueError(f"profile_slots={self.profile_slots} must lie in [1, 10080]")
        if self.window_length < 2:
            raise ValueError(f"window_length={self.window_length} must be >= 2")
        if not 1 <= self.min_periods <= self.window_length:
            raise ValueError(
                f"min_periods={self.min_periods} must lie in [1, window_length={self.window_length}]"
            )
        if not 0.0 <= self.min_autocorrelation < 1.0:
            raise ValueError(f"min_autocorrelation={self.min_autocorrelation} must lie in [0, 1)")


def detect_season(
    history: pd.Series, step: pd.Timedelta, *, min_autocorrelation: float = 0.3
) -> pd.Timedelta | None:
    """The daily or weekly cycle of ``history``, or None when neither is clear.

    A season is a candidate only when the history covers two full cycles; the
    one with the highest autocorrelation at its lag wins if it reaches
    ``min_autocorrelation``.
    """
    regular = history.resample(step).mean().interpolate(limit_direction="both")
    values = regular.to_numpy()
    if values.size < 4 or np.nanstd(values) == 0:
        return None
    centred = values - values.mean()
    best, best_acf = None, min_autocorrelation
    for period in _SEASONS.values():
        lag = int(period / step)
        if lag < 2 or values.size < 2 * lag:
            continue
        acf = float(np.dot(centred[:-lag], centred[lag:]) / np.dot(centred, centred))
        if acf >= best_acf:
            best, best_acf = period, acf
    return best


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


@register
class DynamicThresholdDetector(Detector):
    """Robust z-score of a value's residual against a seasonal profile.

    The residual is the value minus the profile's median for its slot of the
    day (or week); the rolling median of past residuals follows the current
    level, and the training residuals' robust spread scales the deviation.
    Both directions are anomalous; 0.99 means a 2.58-sigma deviation.
    """

    name: ClassVar[str] = "dynamic_threshold"
    config_class = DynamicThresholdConfig
    config: DynamicThresholdConfig
    min_history_length: ClassVar[int] = 10

    def _slots(self, index: pd.DatetimeIndex) -> np.ndarray:
        return (index.asi8 // self.slot_ns_) % len(self.profile_)

    def _fit(self, history: pd.Series) -> None:
        config = self.config
        step = infer_step(history.index)
        if config.season == "auto":
            season = detect_season(history, step, min_autocorrelation=config.min_autocorrelation)
        elif config.season == "none":
            season = None
        else:
            season = _SEASONS[config.season]
        values = history.to_numpy()
        if season is None:
            profile = np.array([np.nanmedian(values)])
            slot_ns = int(pd.Timedelta("1D").value)
        else:
            # No finer than the data's own step: an empty slot would carry no information.
            n_slots = max(1, min(config.profile_slots, int(season / step)))
            slot_ns = int(season.value // n_slots)
            slots = (history.index.asi8 // slot_ns) % n_slots
            frame = pd.DataFrame({"slot": slots, "value": values}).dropna()
            medians = frame.groupby("slot")["value"].median().reindex(range(n_slots))
            # Fill slots the history never saw from their neighbours, wrapping around the cycle.
            tripled = pd.concat([medians, medians, medians], ignore_index=True)
            filled = tripled.interpolate(limit_direction="both").to_numpy()[n_slots : 2 * n_slots]
            smooth = pd.Series(np.concatenate([filled[-1:], filled, filled[:1]]))
            profile = smooth.rolling(3, center=True).median().to_numpy()[1:-1]
        self.season_s_ = None if season is None else int(season.total_seconds())
        self.step_s_ = float(step.total_seconds())
        self.profile_ = profile.astype("float64")
        self.slot_ns_ = slot_ns
        residuals = values - self.profile_[self._slots(history.index)]
        self.level_ = float(np.nanmedian(residuals))
        self.scale_ = 1.0
        _, deviation = self._levels(history)
        self.scale_ = robust_scale(deviation)

    def _levels(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        baseline = self.profile_[self._slots(window.index)]
        residuals = window.to_numpy() - baseline
        length, prior = self.config.window_length, self.config.min_periods
        recent = _causal_rolling_median(residuals, length, 1)
        # At the start of a window there is little past: shrink the recent level toward the
        # trained one, weighting it by how many past points it rests on.
        n_past = pd.Series(residuals).shift(1).rolling(length, min_periods=1).count().to_numpy()
        n_past = np.nan_to_num(n_past, nan=0.0)
        recent = np.where(np.isnan(recent), self.level_, recent)
        level = (n_past * recent + prior * self.level_) / (n_past + prior)
        return baseline + level, residuals - level

    def _score_z(self, window: pd.Series) -> np.ndarray:
        _, deviation = self._levels(window)
        return np.abs(deviation) / self.scale_

    def _expected_range(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        expected, _ = self._levels(window)
        half = Z_AT_THRESHOLD * self.scale_
        return expected - half, expected + half

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params = {
            "season_s_": self.season_s_,
            "step_s_": self.step_s_,
            "slot_ns_": self.slot_ns_,
            "level_": self.level_,
            "scale_": self.scale_,
        }
        return params, {"profile_": self.profile_}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.season_s_ = params["season_s_"]
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

    def _expected_range(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        median, spread = self._stats(window)
        return median - Z_AT_THRESHOLD * spread, median + Z_AT_THRESHOLD * spread

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n_history_": getattr(self, "n_history_", 0)}, {}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_history_ = int(params.get("n_history_", 0))
