"""Random forest forecaster: every step of the horizon at once (direct multi-step).

The forest sees the recent values, the seasonal profile at the target, the
value one season before it, its time of day and the distance ahead, all
relative to the median of the recent values; its quantiles are out-of-bag
residual quantiles by distance ahead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from models.catalog import register
from models.contract import check_int
from models.forecast import (
    _DAY,
    _HORIZON_BUCKETS,
    QUANTILE_COLUMNS,
    QUANTILES,
    Forecaster,
    ForecasterConfig,
    SeasonalProfile,
    index_ns,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomForestForecasterConfig(ForecasterConfig):
    """``n_lags``: recent values seen (their median is the reference level).
    ``n_samples``: (origin, steps ahead) pairs learnt from. ``train_horizon``: the
    longest distance ahead sampled in training (farther ones reuse it). Forest
    hyperparameters as in scikit-learn; ``slot_s``: the profile's slot."""

    n_lags: int = 12
    n_samples: int = 10_000
    train_horizon: int = 288
    n_estimators: int = 40
    max_depth: int = 12
    min_samples_leaf: int = 5
    slot_s: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_lags", self.n_lags, 1, 1000)
        check_int("n_samples", self.n_samples, 100, 10_000_000)
        check_int("train_horizon", self.train_horizon, 1, 100_000)
        check_int("n_estimators", self.n_estimators, 1, 2000)
        check_int("max_depth", self.max_depth, 1, 100)
        check_int("min_samples_leaf", self.min_samples_leaf, 1, 10_000)
        check_int("slot_s", self.slot_s, 1, 86_400)
        check_int("seed", self.seed, 0, 2**32 - 1)


@register
class RandomForestForecaster(SeasonalProfile, Forecaster):
    """Direct multi-step forest on recent values, season and calendar; quantiles out of bag."""

    name = "random_forest"
    config_class = RandomForestForecasterConfig
    saved_apart: ClassVar[frozenset[str]] = frozenset({"forest_"})

    @classmethod
    def _test_config(cls) -> RandomForestForecasterConfig:
        return RandomForestForecasterConfig(n_estimators=10, max_depth=6, n_samples=2000)
    min_history_length = 50

    @property
    def n_features(self) -> int:
        return self.config.n_lags + 7  # type: ignore[attr-defined]

    def context_length(self) -> int:
        return self.config.n_lags + self.period_steps  # type: ignore[attr-defined]

    def _features(self, values: np.ndarray, stamps_ns: np.ndarray, origins: np.ndarray,
                  ahead: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, reference level and scale for (origin position, steps ahead) pairs.

        ``values`` may hold NaN (gaps); the origin's own value is ``values[origin]``.
        """
        config: RandomForestForecasterConfig = self.config  # type: ignore[assignment]
        m, step_ns = self.period_steps, self.step_.value
        lags = np.stack([values[np.maximum(origins - i, 0)] for i in range(config.n_lags)], axis=1)
        reference = np.nanmedian(np.where(np.isfinite(lags), lags, np.nan), axis=1)
        reference = np.where(np.isfinite(reference), reference, self.level_)
        scale = self.scale_
        target_ns = stamps_ns[origins] + ahead * step_ns
        seasons_back = (ahead - 1) // m + 1
        naive_at = origins + ahead - seasons_back * m
        naive = np.where(naive_at >= 0, values[np.clip(naive_at, 0, len(values) - 1)], np.nan)
        profile_target = self._profile_at(target_ns)
        naive = np.where(np.isfinite(naive), naive, profile_target)
        tod = 2 * np.pi * (target_ns % _DAY.value) / _DAY.value
        columns = [
            *(((lags[:, i] - reference) / scale) for i in range(config.n_lags)),
            (profile_target - reference) / scale,
            (self._profile_at(stamps_ns[origins]) - reference) / scale,
            (naive - reference) / scale,
            np.sin(tod), np.cos(tod),
            ((target_ns // _DAY.value + 3) % 7 >= 5).astype(float),
            np.log1p(ahead.astype(float)),
        ]
        features = np.nan_to_num(np.stack(columns, axis=1), nan=0.0, posinf=0.0, neginf=0.0)
        return features, reference, np.full(len(origins), scale)

    def _fit(self, grid: pd.Series) -> None:
        from sklearn.ensemble import RandomForestRegressor

        config: RandomForestForecasterConfig = self.config  # type: ignore[assignment]
        values = grid.to_numpy(dtype="float64")
        stamps = index_ns(grid.index)
        self._fit_profile(grid, config.slot_s)
        self.level_ = float(np.nanmedian(values))
        diffs = np.abs(np.diff(values))
        spread = float(np.nanmedian(np.abs(values - self.level_))) * 1.4826
        self.scale_ = max(spread, float(np.nanmedian(diffs)) if np.isfinite(diffs).any() else 0.0,
                          1e-9 * max(1.0, abs(self.level_)))
        rng = np.random.default_rng(config.seed)
        horizon = min(config.train_horizon, config.max_horizon, len(values) - config.n_lags - 1)
        if horizon < 1:
            raise ValueError(f"history has {len(values)} steps; the forest needs more than "
                             f"{config.n_lags + 1}")
        ahead = rng.integers(1, horizon + 1, size=config.n_samples)
        origins = rng.integers(config.n_lags - 1, len(values) - ahead)
        keep = np.isfinite(values[origins + ahead]) & np.isfinite(values[origins])
        origins, ahead = origins[keep], ahead[keep]
        if origins.size < 50:
            raise ValueError(f"history holds {origins.size} usable (origin, target) pairs; "
                             "the forest needs at least 50")
        features, reference, scale = self._features(values, stamps, origins, ahead)
        target = (values[origins + ahead] - reference) / scale
        forest = RandomForestRegressor(
            n_estimators=config.n_estimators, max_depth=config.max_depth,
            min_samples_leaf=config.min_samples_leaf, max_features=0.5, bootstrap=True,
            oob_score=True, random_state=config.seed, n_jobs=1)
        forest.fit(features, target)
        residual = target - forest.oob_prediction_
        bucket = np.searchsorted(_HORIZON_BUCKETS, ahead)
        overall = np.quantile(residual, QUANTILES)
        self.residual_quantiles_ = np.stack([
            np.quantile(residual[bucket == b], QUANTILES) if (bucket == b).sum() >= 30
            else overall for b in range(len(_HORIZON_BUCKETS))])
        # A bucket beyond those trained on keeps the farthest trained one's spread.
        trained = [b for b in range(len(_HORIZON_BUCKETS)) if (bucket == b).sum() >= 30]
        if trained:
            self.residual_quantiles_[trained[-1] + 1:] = self.residual_quantiles_[trained[-1]]
        self.forest_ = forest

    def _forecast(self, context: pd.Series, index: pd.DatetimeIndex) -> pd.DataFrame:
        values = context.to_numpy(dtype="float64")
        stamps = index_ns(context.index)
        ahead = np.arange(1, len(index) + 1)
        origins = np.full(len(index), len(values) - 1)
        # The forest knows distances up to its training horizon; beyond, the farthest it knows
        # with the target's own calendar and season.
        features, reference, scale = self._features(values, stamps, origins, ahead)
        limit = np.log1p(float(min(self.config.train_horizon, self.config.max_horizon)))
        features[:, -1] = np.minimum(features[:, -1], limit)
        yhat = reference + scale * self.forest_.predict(features)
        bucket = np.searchsorted(_HORIZON_BUCKETS, ahead)
        quantiles = yhat[:, None] + scale[:, None] * self.residual_quantiles_[bucket]
        frame = pd.DataFrame(quantiles, index=index, columns=list(QUANTILE_COLUMNS))
        frame["yhat"] = yhat
        return frame

    def _save_files(self, directory: Path) -> None:
        from models.random_forest import FOREST_FILE, save_forest

        save_forest(self.forest_, directory / FOREST_FILE)

    def _load_files(self, directory: Path) -> None:
        from models.random_forest import FOREST_FILE, load_forest

        self.forest_ = load_forest(directory / FOREST_FILE, self.n_features, type(self).__name__)
