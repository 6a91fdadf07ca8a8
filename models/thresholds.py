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
    Z_AT_EXPECTED_RANGE_SCORE,
    Detector,
    DetectorConfig,
    register,
)
from models.seasonality import (
    _MAD_TO_SIGMA,
    SEASONS,
    causal_rolling_median_mad,
    choose_season,
    recent_level,
    robust_scale,
    seasonal_profile,
    slot_index,
    slot_length_ns,
)


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

    def context_points(self) -> int:
        return 0

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
        return Z_AT_EXPECTED_RANGE_SCORE * np.maximum(np.maximum(above, below), 0.0)

    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(window)
        return np.full(n, self.lower_), np.full(n, self.upper_)



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
    # Its range follows the season and the current level at every point: the one to report.
    provides_expected_range: ClassVar[bool] = True
    config: DynamicThresholdConfig
    min_history_length: ClassVar[int] = 10

    @property
    def trained_step(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.step_s_)

    def context_points(self) -> int:
        return self.config.window_length

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
    requires_fit: ClassVar[bool] = False
    provides_expected_range: ClassVar[bool] = True
    config: WindowBaselineConfig

    def _fit(self, history: pd.Series) -> None:
        self.n_history_ = len(history)

    def context_points(self) -> int:
        return self.config.window_length

    def _stats(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        x = window.to_numpy()
        length, periods = self.config.window_length, self.config.min_periods
        median, mad = causal_rolling_median_mad(x, length, periods)
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
