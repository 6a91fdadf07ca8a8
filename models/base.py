"""The detector contract, its errors, the model registry and plain-format persistence.

Every detector is a class with a frozen config dataclass, ``fit(history)``
returning self, learned state in attributes ending in ``_`` and
``score(window)`` returning a causal score in [0, 1] per point (NaN where the
value is missing). Persistence writes ``config.json`` plus JSON state and
``.npz`` arrays; nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy.special import erf, erfinv

from features.series import infer_step
from models.calibration import TailCalibrator

FORMAT_VERSION = 2
#: Calibrated score at which a point is called anomalous by default.
DEFAULT_THRESHOLD = 0.99
#: The |z| that maps to DEFAULT_THRESHOLD under ``z_to_score``.
Z_AT_THRESHOLD = 2.5758293035489004


class NotFittedError(RuntimeError):
    """A model was asked to score or save before ``fit``."""


class ModelFormatError(ValueError):
    """A saved model is missing, of another class, or of an unknown format version."""


def package_version() -> str:
    try:
        return metadata.version("novaevo-aiops")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def header(name: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a saved model: what it is and which format it is in."""
    return {
        "class": class_name,
        "name": name,
        "package_version": package_version(),
        "format_version": FORMAT_VERSION,
        "config": config,
    }


def read_json(path: Path, what: str) -> Any:
    """Parse a saved JSON file, or raise ModelFormatError naming ``what`` and ``path``."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelFormatError(f"cannot read {what} at {path}: {error}") from error


def check_format(saved: dict[str, Any], path: Path) -> None:
    """Refuse a saved model of another format version."""
    if saved.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has format_version {saved.get('format_version')!r}; "
            f"this version reads {FORMAT_VERSION}"
        )


def write_model_files(path: Path, name: str, class_name: str, config: dict[str, Any],
                      params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """``config.json`` (with the header), ``state.json`` and ``arrays.npz`` of a saved model."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(header(name, class_name, config), indent=2))
    (path / "state.json").write_text(json.dumps(params, indent=2))
    np.savez(path / "arrays.npz", **arrays)


def read_model_files(path: Path, what: str
                     ) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
    """The header, state and arrays :func:`write_model_files` wrote, format version checked.

    Raises
    ------
    ModelFormatError
        A file is missing or unreadable, or of another format version.
    """
    saved = read_json(path / "config.json", what)
    params = read_json(path / "state.json", what)
    try:
        with np.load(path / "arrays.npz", allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
    except (OSError, ValueError) as error:
        raise ModelFormatError(f"cannot read {what} in {path}: {error}") from error
    check_format(saved, path)
    return saved, params, arrays


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


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """Refuse a config field that is not an int in ``[low, high]``, naming field and range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}={value} must lie in [{low}, {high}]")


def check_fields(cls: type, values: Mapping[str, Any]) -> None:
    """Refuse keys that are not fields of the dataclass ``cls``, naming them and the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    """Base of every detector config: hyperparameters only, all defaulted, JSON-friendly."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        check_fields(cls, values)
        return cls(**values)


class Detector(ABC):
    """A per-series anomaly detector.

    Subclasses set ``name`` (the registry key) and ``config_class``, implement
    ``_fit``, ``_score_z`` (a raw, non-negative deviation per point) and the
    state accessors. ``score`` returns a value in [0, 1] per point of the
    window; higher is more anomalous; a point scores from its own value and
    the past only.

    Calibration: unless a class sets ``calibrated = False``, ``fit`` ends by
    fitting a :class:`~models.calibration.TailCalibrator` on the raw scores of
    the training data (``_training_raw_scores``), and ``score`` maps raw scores
    through it, so that 0.99 means a 1-in-100 rarity for every detector and
    series. Uncalibrated classes map raw z through the normal tail.

    Models with learned state that is not plain arrays (a scikit-learn
    estimator, a torch state dict) override ``_save_files``/``_load_files``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[DetectorConfig]]
    calibrated: ClassVar[bool] = True

    def __init__(self, config: DetectorConfig | None = None) -> None:
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"config must be a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

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

    def raw_threshold(self, score: float = DEFAULT_THRESHOLD) -> float:
        """The raw score that calibrates to ``score``."""
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is None:
            return float(np.sqrt(2.0) * erfinv(score))
        return calibrator.raw_at(score)

    def expected_range(self, window: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the values that would score below the default threshold."""
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

    @abstractmethod
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Learned state as (JSON-friendly scalars, named arrays)."""

    @abstractmethod
    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...

    @property
    def is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    @property
    def trained_step(self) -> pd.Timedelta | None:
        """The sampling step of the history it was fitted on; None if it does not keep one."""
        return None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(history) first")

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write config, state and arrays under ``directory`` (created if needed)."""
        self._check_fitted()
        path = Path(directory)
        params, arrays = self.get_state()
        write_model_files(path, self.name, type(self).__name__, self.config.to_dict(), params,
                          arrays)
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is not None:
            (path / "calibration.json").write_text(json.dumps(calibrator.to_dict()))
        self._save_files(path)
        return path

    def _save_files(self, directory: Path) -> None:
        """Write state that is not plain arrays (estimators, state dicts); default: nothing."""
        return None

    def _load_files(self, directory: Path) -> None:
        """Read what ``_save_files`` wrote; default: nothing."""
        return None

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Read a detector written by ``save``; checks class and format version."""
        path = Path(directory)
        saved, params, arrays = read_model_files(path, "a saved detector")
        target = cls
        if cls is Detector or getattr(cls, "name", None) != saved.get("name"):
            try:
                target = registry_class(saved.get("name", "?"))
            except ValueError as error:
                raise ModelFormatError(
                    f"{path} holds a detector this version does not know: {error}"
                ) from error
            if cls is not Detector and not issubclass(target, cls):
                raise ModelFormatError(f"{path} holds a {saved.get('class')}, not a {cls.__name__}")
        detector = target(target.config_class.from_dict(saved["config"]))
        detector.set_state(params, arrays)
        calibration = path / "calibration.json"
        try:
            detector.calibrator_ = (
                TailCalibrator.from_dict(json.loads(calibration.read_text()))
                if calibration.exists() else None
            )
            detector._load_files(path)
        except (OSError, ValueError, KeyError) as error:
            raise ModelFormatError(f"cannot read a saved detector in {path}: {error}") from error
        return detector


_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: enrol a detector under its stable ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"detector name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def registry_class(name: str) -> type[Detector]:
    """The detector class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {sorted(_REGISTRY)}") from None


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def make_detector(name: str, **config: Any) -> Detector:
    """A fresh detector of registry ``name`` with ``config`` overriding its defaults."""
    cls = registry_class(name)
    return cls(cls.config_class.from_dict(config))
