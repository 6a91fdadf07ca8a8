"""The detector contract: scores in [0, 1], calibration, input checks and the detector registry.

Every detector is a :class:`models.contract.Model` with a frozen config
dataclass, ``fit(history)`` returning self, learned state in attributes ending
in ``_`` and ``score(window)`` returning a causal score in [0, 1] per point
(NaN where the value is missing). Persistence, errors and the config base live
in :mod:`models.contract` and are re-exported here, where older code imports
them from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy.special import erf, erfinv

from features.series import infer_step
from models import catalog
from models.calibration import TailCalibrator
from models.catalog import register
from models.contract import (
    FORMAT_VERSION,
    Model,
    ModelConfig,
    ModelFormatError,
    NotFittedError,
    check_fields,
    check_format,
    check_int,
    header,
    package_version,
    read_json,
    write_model_files,
)

#: Calibrated score at which the expected range is drawn: a value inside the range a
#: detector reports scores below it. Not the paging threshold (``models.alarms.ALARM_THRESHOLD``).
EXPECTED_RANGE_SCORE = 0.99
#: The |z| that maps to EXPECTED_RANGE_SCORE under ``z_to_score``.
Z_AT_EXPECTED_RANGE_SCORE = 2.5758293035489004


def z_to_score(z: np.ndarray) -> np.ndarray:
    """Map a non-negative z-like deviation to [0, 1] as a two-sided normal tail.

    ``score = P(|N(0,1)| < z)``, so 0.99 means a deviation seen once in a
    hundred points under a normal model of the residuals. NaN stays NaN.
    """
    z = np.abs(np.asarray(z, dtype="float64"))
    return erf(z / math.sqrt(2.0))


#: The zone of every index the detectors work on.
_UTC = dt.UTC


def check_series(series: Any, *, name: str, min_length: int = 1) -> pd.Series:
    """Validate a detector input: a float Series on a UTC, increasing, duplicate-free index."""
    if not isinstance(series, pd.Series):
        raise TypeError(f"{name} must be a pandas Series, got {type(series).__name__}")
    if not isinstance(series.index, pd.DatetimeIndex):
        raise TypeError(f"{name} must have a DatetimeIndex, got {type(series.index).__name__}")
    if series.index.tz is None:
        raise ValueError(f"{name} has a timezone-naive index; localise it to UTC")
    if len(series) < min_length:
        raise ValueError(f"{name} has {len(series)} points; need at least {min_length}")
    if not series.index.is_monotonic_increasing or series.index.has_duplicates:
        raise ValueError(f"{name} index must be strictly increasing with no duplicated timestamps")
    if series.dtype == np.float64 and series.index.unit == "ns" and series.index.tz is _UTC:
        # Already in the form every detector works in (the scoring path's common case): no copy,
        # and the index keeps its cached monotonicity for the next detector's check.
        values = series
    else:
        try:
            values = pd.to_numeric(series, errors="raise").astype("float64")
        except (ValueError, TypeError) as error:
            raise TypeError(f"{name} must hold numbers: {error}") from error
        # pandas may keep second or microsecond resolution; all arithmetic here is in ns.
        values.index = series.index.tz_convert("UTC").as_unit("ns")
    if np.isinf(values.to_numpy()).any():
        position = int(np.flatnonzero(np.isinf(values.to_numpy()))[0])
        raise ValueError(f"{name} holds an infinite value at {series.index[position]}")
    return values


def history_step(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """The sampling step of ``index`` (:func:`features.series.infer_step`); None below 2 points."""
    return infer_step(index) if len(index) >= 2 else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectorConfig(ModelConfig):
    """Base of every detector config: hyperparameters only, all defaulted, JSON-friendly."""


class Detector(Model):
    """A per-series anomaly detector.

    Subclasses set ``name`` (the registry key) and ``config_class``, implement
    ``_fit`` and ``_score_z`` (a raw, non-negative deviation per point).
    ``score`` returns a value in [0, 1] per point of the window; higher is
    more anomalous; a point scores from its own value and the past only.

    Calibration: unless a class sets ``calibrated = False``, ``fit`` ends by
    fitting a :class:`~models.calibration.TailCalibrator` on the raw scores of
    the training data (``_training_raw_scores``), and ``score`` maps raw scores
    through it, so that 0.99 means a 1-in-100 rarity for every detector and
    series. Uncalibrated classes map raw z through the normal tail. The
    calibration is saved beside the state, as ``calibration.json``.

    State, persistence and capabilities: see :class:`models.contract.Model`.
    """

    kind: ClassVar[catalog.Kind] = "detector"
    config_class: ClassVar[type[DetectorConfig]]
    calibrated: ClassVar[bool] = True
    _kind_state: ClassVar[frozenset[str]] = frozenset({"calibrator_"})

    # -- the contract -----------------------------------------------------------------
    def fit(self, history: pd.Series) -> Self:
        """Learn what normal looks like from ``history``; returns self.

        Raises
        ------
        ValueError
            ``history`` holds fewer non-missing points than :meth:`min_history_points`.
        """
        values = check_series(history, name="history")
        needed = self.min_history_points(history_step(values.index))
        n_observed = int(values.notna().sum())
        if n_observed < needed:
            raise ValueError(
                f"history has {n_observed} non-missing points; {type(self).__name__} "
                f"({self.name}) needs at least {needed}"
            )
        with self._fitting():
            self._fit(values)
            self.calibrator_ = None
            if self.calibrated:
                raw = self._training_raw_scores(values)
                if np.isfinite(raw).sum() >= 10:
                    self.calibrator_ = TailCalibrator().fit(raw)
        return self

    def score(self, window: pd.Series) -> pd.Series:
        """Anomaly score in [0, 1] for every point of ``window`` (NaN where the value is NaN)."""
        self._check_fitted()
        values = check_series(window, name="window")
        return self._calibrated(values, self._score_z(values))

    def _calibrated(self, values: pd.Series, raw: np.ndarray) -> pd.Series:
        scores = self.calibrate(raw)
        scores[np.isnan(values.to_numpy())] = np.nan
        return pd.Series(scores, index=values.index, name="score")

    def score_with_range(self, window: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
        """:meth:`score` and :meth:`expected_range` of one window, sharing their common work."""
        self._check_fitted()
        values = check_series(window, name="window")
        raw, low, high = self._score_and_range(values, self.raw_threshold())
        return self._calibrated(values, raw), low, high

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Map raw scores to [0, 1] with the training calibration (or the normal tail)."""
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is None:
            return z_to_score(raw)
        return calibrator.transform(raw)

    def raw_threshold(self, score: float = EXPECTED_RANGE_SCORE) -> float:
        """The raw score that calibrates to ``score``."""
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is None:
            return float(np.sqrt(2.0) * erfinv(score))
        return calibrator.raw_at(score)

    def expected_range(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the values that would score below ``EXPECTED_RANGE_SCORE``."""
        self._check_fitted()
        values = check_series(window, name="window")
        return self._expected_range(values, self.raw_threshold())

    def min_history_points(self, step: pd.Timedelta | None = None) -> int:
        """Fewest non-missing history points ``fit`` accepts with this config.

        ``step`` is the series' sampling step, for a model whose need is a span of
        time (None: not known). The count holds for a history without gaps; where
        gaps cut a model's context short, its fit may ask for more and says so.
        """
        return self.min_history_length

    def context_points(self) -> int:
        """Rows of past a point's score and expected range depend on, at most.

        A point with at least this many rows before it in a window scores the
        same, bit for bit, as in any longer window ending at it: the window's
        start no longer matters. Scores of such points can be reused when a
        window slides (see :class:`models.bundle.DetectorBundle`).
        """
        raise NotImplementedError(f"{type(self).__name__} does not declare its context")

    # -- what subclasses provide --------------------------------------------------------
    #: The need :meth:`min_history_points` declares, for a class whose need is one number.
    min_history_length: ClassVar[int] = 2

    @abstractmethod
    def _fit(self, history: pd.Series) -> None: ...

    @abstractmethod
    def _score_z(self, window: pd.Series) -> np.ndarray:
        """Raw non-negative deviation per point (for uncalibrated classes, a |z|)."""

    def _training_raw_scores(self, history: pd.Series) -> np.ndarray:
        """Raw scores the calibration learns from; by default the history scored in-sample."""
        return self._score_z(history)

    @abstractmethod
    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the values whose raw score stays below ``raw_threshold``."""

    def _score_and_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw scores and bounds together; classes whose two share work override this."""
        return self._score_z(window), *self._expected_range(window, raw_threshold)

    @property
    def trained_step(self) -> pd.Timedelta | None:
        """The sampling step of the history it was fitted on; None if it does not keep one."""
        return None

    # -- persistence: the calibration beside the state ------------------------------------
    def _save_kind_files(self, directory: Path) -> None:
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is not None:
            (directory / "calibration.json").write_text(json.dumps(calibrator.to_dict()))

    def _load_kind_files(self, directory: Path) -> None:
        calibration = directory / "calibration.json"
        self.calibrator_ = (
            TailCalibrator.from_dict(json.loads(calibration.read_text()))
            if calibration.exists() else None
        )


# -- the registry of detectors (the catalog's "detector" kind) ------------------------------
def registry_class(name: str) -> type[Detector]:
    """The detector class registered as ``name``."""
    return catalog.model_class(name, "detector")  # type: ignore[return-value]


def registered_names() -> list[str]:
    """Names of the registered per-series detectors, sorted."""
    return catalog.names("detector")


def make_detector(name: str, **config: Any) -> Detector:
    """A fresh detector of registry ``name`` with ``config`` overriding its defaults."""
    return catalog.make(name, "detector", **config)  # type: ignore[return-value]


__all__ = [
    "EXPECTED_RANGE_SCORE",
    "FORMAT_VERSION",
    "Z_AT_EXPECTED_RANGE_SCORE",
    "Detector",
    "DetectorConfig",
    "ModelFormatError",
    "NotFittedError",
    "check_fields",
    "check_format",
    "check_int",
    "check_series",
    "header",
    "history_step",
    "make_detector",
    "package_version",
    "read_json",
    "register",
    "registered_names",
    "registry_class",
    "write_model_files",
    "z_to_score",
]
