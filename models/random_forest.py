"""Random-forest detector: how far a value lies from what its recent past predicts.

A scikit-learn :class:`~sklearn.ensemble.RandomForestRegressor` predicts each
point from the points before it (lags, rolling statistics) and from its time
of day and day of week (:mod:`features.lags`). The score is the residual
measured against the spread the forest itself expects there.

Everything the forest sees is relative to a *reference*: the median of the
last ``n_lags`` values. Features are ``(lag − reference) / scale`` and
``(rolling statistic − reference) / scale``, the target is
``(y − reference) / scale``, with ``scale`` a robust spread of the training
targets. So one config serves CPU percent and bytes alike, and a model
trained at one level keeps working after a level shift: a shift is flagged
while the reference still holds the old level (about ``n_lags / 2`` points),
then absorbed. Being a median, the reference ignores a lone spike, so the
point after a spike is judged against the level before it.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor

from features.lags import CALENDAR_COLUMNS, ROLLING_STATISTICS, lag_feature_matrix
from models.base import Detector, DetectorConfig, ModelFormatError, check_int, register
from models.contract import check_float
from models.seasonality import robust_scale

#: File holding the fitted forest, written with skops (no pickle).
FOREST_FILE = "forest.skops"
#: Types a saved forest may hold beyond those skops trusts by default. Anything else in the
#: file (a function, a class of another package) makes loading fail before any object is built.
TRUSTED_SKOPS_TYPES = frozenset({"sklearn.tree._tree.Tree"})
#: Fewest complete training rows (points with a full past) a fit accepts.
MIN_TRAIN_ROWS = 30
#: Fewest out-of-bag trees for a training point to count in calibration.
_MIN_OOB_TREES = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomForestDetectorConfig(DetectorConfig):
    """Hyperparameters of :class:`RandomForestDetector`.

    Parameters
    ----------
    n_estimators, max_depth, min_samples_leaf, max_features
        Passed to :class:`~sklearn.ensemble.RandomForestRegressor`
        (``max_features`` as the fraction of features tried per split).
    n_lags
        Past values used as lags; their median is the reference level.
    rolling_lengths
        Window lengths, in points, of the rolling mean, std, min and max of the past.
    fill_limit
        Gaps of at most this many points are bridged with the last value before
        them when building features; a point after a longer gap scores 0 until
        the window holds a full past again.
    max_train_points
        Only the most recent training points with a full past are learned from
        (bounds the fit time of long histories).
    max_samples
        Each tree learns from a bootstrap sample of this fraction of the rows
        (1: as many as there are rows; 0.5 halves the fit time, see
        benchmarks/README.md for what it does to accuracy).
    seed
        ``random_state`` of the forest: same seed and history, same model.
    """

    n_estimators: int = 50
    max_depth: int = 10
    min_samples_leaf: int = 5
    max_features: float = 0.5
    n_lags: int = 12
    rolling_lengths: tuple[int, ...] = (6, 24)
    fill_limit: int = 3
    max_train_points: int = 4000
    max_samples: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("n_estimators", self.n_estimators, 2, 1000)
        check_int("max_depth", self.max_depth, 1, 64)
        check_int("min_samples_leaf", self.min_samples_leaf, 1, 10_000)
        if isinstance(self.max_features, bool) or not isinstance(self.max_features, int | float):
            raise TypeError(f"max_features must be a float, got {type(self.max_features).__name__}")
        if not 0.0 < self.max_features <= 1.0:
            raise ValueError(f"max_features={self.max_features} must lie in (0, 1]")
        check_int("n_lags", self.n_lags, 1, 1000)
        # JSON brings a list back; keep the field a tuple so configs compare equal.
        if not isinstance(self.rolling_lengths, list | tuple):
            raise TypeError(
                f"rolling_lengths must be a list of ints, got {type(self.rolling_lengths).__name__}"
            )
        object.__setattr__(self, "rolling_lengths", tuple(self.rolling_lengths))
        if len(self.rolling_lengths) > 8:
            raise ValueError(f"rolling_lengths={list(self.rolling_lengths)}: at most 8 lengths")
        for length in self.rolling_lengths:
            check_int("rolling_lengths", length, 2, 10_000)
        if len(set(self.rolling_lengths)) != len(self.rolling_lengths):
            raise ValueError(f"rolling_lengths={list(self.rolling_lengths)} repeats a length")
        check_int("fill_limit", self.fill_limit, 0, 1000)
        check_int("max_train_points", self.max_train_points, MIN_TRAIN_ROWS, 1_000_000)
        check_float("max_samples", self.max_samples, 0.1, 1.0, open_low=False)
        check_int("seed", self.seed, 0, 2**32 - 1)

    @property
    def context_length(self) -> int:
        """Points of past a point needs before it can be scored."""
        return max((self.n_lags, *self.rolling_lengths))


@dataclasses.dataclass
class _Rows:
    """The forest's view of a series: features, target and reference, per point."""

    features: np.ndarray  # (n, n_features), relative to the reference and scaled
    target: np.ndarray  # (n,) (y - reference) / scale; NaN where y is missing
    reference: np.ndarray  # (n,) in the series' units
    complete: np.ndarray  # (n,) bool: every feature present


def tree_predictions(forest: RandomForestRegressor, features: np.ndarray) -> np.ndarray:
    """Every tree's prediction, shape ``(n_trees, n_points)``.

    Calls each tree's compiled ``tree_.predict`` on one float32 copy of the
    features (what ``DecisionTreeRegressor.predict`` does after its checks),
    which is several times faster than ``predict`` per tree for small windows.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.shape[0] == 0:
        return np.empty((len(forest.estimators_), 0))
    return np.stack([tree.tree_.predict(x)[:, 0] for tree in forest.estimators_])


def out_of_bag(
    forest: RandomForestRegressor, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std and count of the predictions of the trees that did not see each training row.

    ``features`` must be the rows the forest was fitted on, in order. The mean
    equals scikit-learn's ``oob_prediction_``; it is NaN where no tree left the
    row out, the std where fewer than two did.
    """
    predictions = tree_predictions(forest, features)
    left_out = np.ones(predictions.shape, dtype=bool)
    for tree_index, in_bag in enumerate(forest.estimators_samples_):
        left_out[tree_index, in_bag] = False
    count = left_out.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(left_out, predictions, 0.0).sum(axis=0) / count
        spread = np.where(left_out, (predictions - mean) ** 2, 0.0).sum(axis=0) / count
    std = np.where(count >= _MIN_OOB_TREES, np.sqrt(spread), np.nan)
    return np.where(count > 0, mean, np.nan), std, count


@register
class RandomForestDetector(Detector):
    """Residual of a random forest's one-step-ahead prediction, against its expected spread.

    The forest predicts each point from the points before it and its calendar
    position. The raw score is
    ``|y − ŷ| / sqrt(σ_trees² + σ_res²)``: ``σ_trees`` is the standard
    deviation of the trees' predictions at that point (large where the trees
    disagree: unusual past, rare hour), ``σ_res`` the forest's typical
    out-of-bag residual. Both directions are anomalous. Calibration learns
    from out-of-bag scores of the training points, so 0.99 means a deviation
    the forest showed at most once in a hundred points it had not trained on.

    A point needs ``context_length`` points of past in its window (short gaps
    bridged, see ``fill_limit``); before that it scores 0 — not anomalous,
    since nothing is known — and its expected range is NaN. Other detectors
    of the bundle (dynamic threshold) cover those first points.
    """

    name: ClassVar[str] = "random_forest"
    config_class = RandomForestDetectorConfig
    config: RandomForestDetectorConfig
    saved_apart: ClassVar[frozenset[str]] = frozenset({"forest_"})

    @classmethod
    def _test_config(cls) -> RandomForestDetectorConfig:
        return RandomForestDetectorConfig(n_estimators=10, max_depth=6)

    def min_history_points(self, step: pd.Timedelta | None = None) -> int:
        """``context_length`` points of past, then ``MIN_TRAIN_ROWS`` points to learn from."""
        return self.config.context_length + MIN_TRAIN_ROWS

    def context_points(self) -> int:
        # A lag may be a value carried over a bridged gap from fill_limit points further back.
        return self.config.context_length + self.config.fill_limit

    # -- features -------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        config = self.config
        return (
            config.n_lags
            + len(ROLLING_STATISTICS) * len(config.rolling_lengths)
            + len(CALENDAR_COLUMNS)
        )

    def _rows(self, series: pd.Series, scale: float) -> _Rows:
        config = self.config
        matrix = lag_feature_matrix(
            series.to_numpy(dtype="float64"),
            series.index,
            n_lags=config.n_lags,
            rolling_lengths=config.rolling_lengths,
            fill_limit=config.fill_limit,
        )
        n_rolling = len(ROLLING_STATISTICS) * len(config.rolling_lengths)
        lags = matrix[:, : config.n_lags]
        complete_lags = ~np.isnan(lags).any(axis=1)
        reference = np.full(len(matrix), np.nan)
        if complete_lags.any():
            reference[complete_lags] = np.median(lags[complete_lags], axis=1)
        features = matrix.copy()
        features[:, : config.n_lags] -= reference[:, None]
        # A spread is already relative; locations are taken from the reference.
        for column, statistic in enumerate(ROLLING_STATISTICS * len(config.rolling_lengths)):
            if statistic != "std":
                features[:, config.n_lags + column] -= reference
        features[:, : config.n_lags + n_rolling] /= scale
        target = (series.to_numpy() - reference) / scale
        complete = ~np.isnan(features).any(axis=1)
        return _Rows(features=features, target=target, reference=reference, complete=complete)

    # -- fit ------------------------------------------------------------------------------
    def _fit(self, history: pd.Series) -> None:
        config = self.config
        # The scale only makes features and target unit-free; the score divides by the
        # forest's own spread. Take it from the deviations from the reference.
        unscaled = self._rows(history, 1.0)
        usable = unscaled.complete & ~np.isnan(unscaled.target)
        n_usable = int(usable.sum())
        if n_usable < MIN_TRAIN_ROWS:
            raise ValueError(
                f"history has {n_usable} points with {config.context_length} points of past "
                f"before them; RandomForestDetector needs at least {MIN_TRAIN_ROWS} "
                "(a longer history, or smaller n_lags / rolling_lengths)"
            )
        scale = robust_scale(unscaled.target[usable])
        features, target = self._training_rows(history, scale)
        forest = RandomForestRegressor(
            n_estimators=config.n_estimators,
            max_depth=config.max_depth,
            min_samples_leaf=config.min_samples_leaf,
            # A float: scikit-learn reads an int 1 as one feature, not all of them.
            max_features=float(config.max_features),
            bootstrap=True,
            max_samples=config.max_samples,
            random_state=config.seed,
            n_jobs=1,
        ).fit(features, target)
        oob_mean, oob_std, _ = out_of_bag(forest, features)
        residual = target - oob_mean
        # Out-of-bag residuals are honest: no tree predicts a point it was trained on.
        residual_scale = robust_scale(residual)
        self.forest_ = forest
        self.scale_ = float(scale)
        self.residual_scale_ = float(residual_scale)
        self.n_train_points_ = len(target)
        self._oob_z: np.ndarray | None = np.abs(residual) / np.sqrt(
            oob_std**2 + residual_scale**2
        )

    def _training_rows(self, history: pd.Series, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Features and target of the points the forest learns from, oldest first."""
        rows = self._rows(history, scale)
        usable = np.flatnonzero(rows.complete & ~np.isnan(rows.target))
        positions = usable[-self.config.max_train_points :]
        return rows.features[positions], rows.target[positions]

    def _oob_raw(self, features: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Raw scores of the training rows from the trees that did not see each row."""
        oob_mean, oob_std, _ = out_of_bag(self.forest_, features)
        return np.abs(target - oob_mean) / np.sqrt(oob_std**2 + self.residual_scale_**2)

    def _training_raw_scores(self, history: pd.Series) -> np.ndarray:
        # Out-of-bag, not in-sample: a forest fits its training points far too closely.
        raw, self._oob_z = getattr(self, "_oob_z", None), None
        if raw is None:
            raw = self._oob_raw(*self._training_rows(history, self.scale_))
        return raw

    # -- score ----------------------------------------------------------------------------
    def _predict(self, window: pd.Series) -> tuple[_Rows, np.ndarray, np.ndarray]:
        """Rows of ``window``, and the forest's mean and spread (scaled units) per point."""
        rows = self._rows(window, self.scale_)
        n = len(window)
        mean, spread = np.full(n, np.nan), np.full(n, np.nan)
        if rows.complete.any():
            predictions = tree_predictions(self.forest_, rows.features[rows.complete])
            mean[rows.complete] = predictions.mean(axis=0)
            tree_std = predictions.std(axis=0)
            spread[rows.complete] = np.sqrt(tree_std**2 + self.residual_scale_**2)
        return rows, mean, spread

    def _score_z(self, window: pd.Series) -> np.ndarray:
        rows, mean, spread = self._predict(window)
        z = np.abs(rows.target - mean) / spread
        # No full past yet: nothing to compare with, so not anomalous.
        return np.where(rows.complete, z, 0.0)

    def _expected_range(
        self, window: pd.Series, raw_threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, mean, spread = self._predict(window)
        half = raw_threshold * spread
        low = rows.reference + self.scale_ * (mean - half)
        high = rows.reference + self.scale_ * (mean + half)
        return low, high

    # -- state: the default get_state, and the forest apart ---------------------------------
    def _save_files(self, directory: Path) -> None:
        save_forest(self.forest_, directory / FOREST_FILE)

    def _load_files(self, directory: Path) -> None:
        self.forest_ = load_forest(directory / FOREST_FILE, self.n_features, type(self).__name__)


def save_forest(forest: RandomForestRegressor, path: Path) -> None:
    """Write a fitted forest with skops (no pickle)."""
    import skops.io as sio  # imported here: it costs seconds and only saving needs it

    sio.dump(forest, path, compression=zipfile.ZIP_DEFLATED)


def load_forest(path: Path, n_features: int, owner: str) -> RandomForestRegressor:
    """Read a forest written by :func:`save_forest`, trusting only plain scikit-learn trees.

    Raises
    ------
    ModelFormatError
        The file is missing, holds untrusted types, is not a fitted forest or
        has another number of features than ``n_features``.
    """
    import skops.io as sio  # see save_forest

    if not path.is_file():
        raise ModelFormatError(f"{path} is missing; a saved {owner} needs it")
    try:
        untrusted = sio.get_untrusted_types(file=path)
        unexpected = sorted(set(untrusted) - TRUSTED_SKOPS_TYPES)
        if unexpected:
            raise ModelFormatError(
                f"{path} holds types this version does not trust: {unexpected}; "
                f"accepted beyond skops' defaults: {sorted(TRUSTED_SKOPS_TYPES)}"
            )
        forest = sio.load(path, trusted=list(untrusted))
    except ModelFormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        raise ModelFormatError(f"cannot read the forest in {path}: {error}") from error
    if not isinstance(forest, RandomForestRegressor) or not all(
        isinstance(tree, DecisionTreeRegressor) for tree in getattr(forest, "estimators_", [])
    ):
        raise ModelFormatError(f"{path} holds a {type(forest).__name__}, not a fitted forest")
    if getattr(forest, "n_features_in_", None) != n_features or not forest.estimators_:
        raise ModelFormatError(
            f"{path} holds a forest of {getattr(forest, 'n_features_in_', '?')} features; "
            f"this config builds {n_features}"
        )
    return forest


__all__ = [
    "FOREST_FILE",
    "TRUSTED_SKOPS_TYPES",
    "RandomForestDetector",
    "RandomForestDetectorConfig",
    "load_forest",
    "out_of_bag",
    "save_forest",
    "tree_predictions",
]
