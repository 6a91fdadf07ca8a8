"""Calibration: raw detector scores → a common [0, 1] scale of rarity.

A raw score (a residual's |z|, a forest's surprise, ...) means different
things for different detectors and series. :class:`TailCalibrator` learns the
distribution of a detector's raw scores on its training data and maps a new
raw score ``r`` to ``1 − P(R ≥ r)``: 0.99 means "seen at most once in a
hundred training points", whatever the detector and series.

Below a high quantile ``u`` the empirical distribution is used; beyond it, a
generalised Pareto distribution fitted to the excesses over ``u`` (the
peaks-over-threshold method of extreme value theory) extrapolates, so that
values far beyond anything seen in training still get distinct, finite
rarities instead of all saturating at the largest training score.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Self

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True, kw_only=True)
class TailCalibratorConfig:
    """``tail_quantile``: where the fitted tail takes over from the empirical distribution.

    ``n_quantiles``: resolution of the stored empirical distribution.
    """

    tail_quantile: float = 0.95
    n_quantiles: int = 200
    min_tail_points: int = 10

    def __post_init__(self) -> None:
        if not 0.5 <= self.tail_quantile < 1.0:
            raise ValueError(f"tail_quantile={self.tail_quantile} must lie in [0.5, 1)")
        if not 10 <= self.n_quantiles <= 10_000:
            raise ValueError(f"n_quantiles={self.n_quantiles} must lie in [10, 10000]")
        if self.min_tail_points < 3:
            raise ValueError(f"min_tail_points={self.min_tail_points} must be >= 3")


class TailCalibrator:
    """Empirical body plus generalised-Pareto tail of a detector's training raw scores."""

    def __init__(self, config: TailCalibratorConfig | None = None) -> None:
        self.config = config or TailCalibratorConfig()

    def fit(self, raw: np.ndarray) -> Self:
        """Learn the distribution of ``raw`` (NaN ignored).

        Raises
        ------
        ValueError
            Fewer than 10 finite raw scores.
        """
        values = np.asarray(raw, dtype="float64")
        values = values[np.isfinite(values)]
        if values.size < 10:
            raise ValueError(f"raw has {values.size} finite scores; calibration needs at least 10")
        probabilities = np.linspace(0.0, self.config.tail_quantile, self.config.n_quantiles)
        self.quantiles_ = np.quantile(values, probabilities)
        self.probabilities_ = probabilities
        threshold = float(self.quantiles_[-1])
        excesses = values[values > threshold] - threshold
        self.threshold_ = threshold
        self.tail_mass_ = float(1.0 - self.config.tail_quantile)
        self.shape_, self.scale_ = 0.0, 0.0
        if excesses.size >= self.config.min_tail_points and np.ptp(excesses) > 0:
            shape, _, scale = stats.genpareto.fit(excesses, floc=0.0)
            # A strongly negative shape puts a hard end on the tail just past the largest
            # training score; clip it so unseen extremes stay rare but not impossible.
            self.shape_, self.scale_ = float(np.clip(shape, -0.25, 1.0)), float(scale)
        elif excesses.size:
            self.scale_ = float(np.mean(excesses))  # exponential tail
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated scores in [0, 1]; NaN stays NaN."""
        r = np.asarray(raw, dtype="float64")
        out = np.full(r.shape, np.nan)
        finite = np.isfinite(r)
        body = finite & (r <= self.threshold_)
        # Where training scores tie (a flat series scores 0 everywhere), a raw score equal to
        # the tied value takes the lowest probability of the tie: it is the usual value.
        grid, first = np.unique(self.quantiles_, return_index=True)
        out[body] = np.interp(r[body], grid, self.probabilities_[first])
        tail = finite & (r > self.threshold_)
        if tail.any():
            out[tail] = 1.0 - self._tail_probability(r[tail] - self.threshold_)
        out[np.isposinf(r)] = 1.0
        return out

    def _tail_probability(self, excess: np.ndarray) -> np.ndarray:
        if self.scale_ <= 0:
            return np.zeros_like(excess)  # training never exceeded the threshold: anything is rare
        if abs(self.shape_) < 1e-9:
            survival = np.exp(-excess / self.scale_)
        else:
            base = np.maximum(1.0 + self.shape_ * excess / self.scale_, 0.0)
            survival = base ** (-1.0 / self.shape_)
        return self.tail_mass_ * survival

    def raw_at(self, score: float) -> float:
        """The raw score that calibrates to ``score`` (for expected ranges)."""
        if not 0.0 < score < 1.0:
            raise ValueError(f"score={score} must lie in (0, 1)")
        if score <= self.config.tail_quantile:
            return float(np.interp(score, self.probabilities_, self.quantiles_))
        survival = (1.0 - score) / self.tail_mass_
        if self.scale_ <= 0:
            return self.threshold_
        if abs(self.shape_) < 1e-9:
            return self.threshold_ - self.scale_ * math.log(survival)
        return self.threshold_ + self.scale_ / self.shape_ * (survival ** (-self.shape_) - 1.0)

    # -- persistence (plain JSON) -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "quantiles_": self.quantiles_.tolist(),
            "probabilities_": self.probabilities_.tolist(),
            "threshold_": self.threshold_,
            "tail_mass_": self.tail_mass_,
            "shape_": self.shape_,
            "scale_": self.scale_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TailCalibrator:
        calibrator = cls(TailCalibratorConfig(**state["config"]))
        calibrator.quantiles_ = np.asarray(state["quantiles_"], dtype="float64")
        calibrator.probabilities_ = np.asarray(state["probabilities_"], dtype="float64")
        for key in ("threshold_", "tail_mass_", "shape_", "scale_"):
            setattr(calibrator, key, float(state[key]))
        return calibrator
