"""What the random-forest detector adds to the contract suite.

Spikes and out-of-hours values stand out, calibration learns from out-of-bag
scores, the forest is saved with skops and only trusted types load back, the
model works at any level and unit, and scoring a window is fast.
"""

from __future__ import annotations

import json
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression

from models import Detector, ModelFormatError
from models.random_forest import (
    FOREST_FILE,
    RandomForestDetector,
    RandomForestDetectorConfig,
    out_of_bag,
    tree_predictions,
)

#: Cheaper than the defaults, still a real forest.
SMALL = RandomForestDetectorConfig(n_estimators=30, max_depth=8)


@pytest.fixture(scope="module")
def detector(history) -> RandomForestDetector:
    """Fitted once on the shared three days of daily sine; never mutate it."""
    return RandomForestDetector(SMALL).fit(history)


def _business_hours(n_days: int, seed: int) -> pd.Series:
    """80 from 08:00 to 18:00 UTC every day, 20 otherwise, Gaussian noise of 2."""
    index = pd.date_range("2026-01-05", periods=n_days * 288, freq="5min", tz="UTC")
    level = np.where((index.hour >= 8) & (index.hour < 18), 80.0, 20.0)
    noise = np.random.default_rng(seed).normal(0.0, 2.0, len(index))
    return pd.Series(level + noise, index=index, name="value")


# -- what it detects ----------------------------------------------------------------------
@pytest.mark.parametrize("size", [8.0, -8.0])
def test_planted_spike_scores_high_and_normal_points_stay_low(detector, window, size):
    spiked = window.copy()
    spiked.iloc[150] += size  # 8 noise sigmas, well inside the daily range of 40..60
    scores = detector.score(spiked).to_numpy()
    assert scores[150] >= 0.99
    normal = np.delete(scores, [150, 151])
    assert np.nanmean(normal >= 0.99) < 0.05
    assert np.nanmedian(normal) < 0.8


def test_points_after_a_spike_are_judged_against_the_level_before_it(detector, window):
    # The reference is a median of past values: one spike of 8 barely drags the expected
    # value of the next points along (a last-value reference would move it by 8).
    spiked = window.copy()
    spiked.iloc[150] += 8.0
    before = np.add(*detector.expected_range(window))[151:156] / 2
    after = np.add(*detector.expected_range(spiked))[151:156] / 2
    assert np.max(np.abs(after - before)) < 2.0


def test_daytime_value_at_night_is_flagged_while_the_daily_step_is_expected():
    history_days = 10
    series = _business_hours(history_days + 1, seed=3)
    history, day = series.iloc[: history_days * 288], series.iloc[history_days * 288 :].copy()
    detector = RandomForestDetector(SMALL).fit(history)
    night, morning = 24, 96  # 02:00 and 08:00 of the scored day
    assert day.index[night].hour == 2 and day.index[morning].hour == 8
    day.iloc[night : night + 12] += 60.0  # business-hours load for an hour at 02:00
    scores = detector.score(day).to_numpy()
    raw = detector._score_z(day)
    assert scores[night] >= 0.99
    # The same jump at 08:00 happens every day: the calendar makes it far less surprising.
    assert raw[night] > 3.0 * raw[morning]
    quiet = np.r_[30:90, 110:210, 230:288]  # away from any step
    assert np.mean(scores[quiet] >= 0.99) < 0.05


def test_level_shift_is_absorbed_after_the_reference_catches_up(detector, window):
    shifted = window + 30.0  # far above anything in training
    scores = detector.score(shifted).to_numpy()
    settled = scores[2 * detector.config.context_length :]
    assert np.nanmean(settled >= 0.99) < 0.05


@pytest.mark.parametrize(("factor", "offset"), [(1e6, 3e9), (1e-3, 0.0)])
def test_one_config_serves_any_unit(history, window, factor, offset):
    # The same shape in bytes or in fractions: the same points stand out.
    spiked = window.copy()
    spiked.iloc[150] += 8.0
    detector = RandomForestDetector(SMALL).fit(history * factor + offset)
    scores = detector.score(spiked * factor + offset).to_numpy()
    assert scores[150] >= 0.99
    assert np.nanmean(np.delete(scores, [150, 151]) >= 0.99) < 0.05


def test_flat_history_makes_any_change_anomalous(history, window):
    flat = pd.Series(42.0, index=history.index)
    detector = RandomForestDetector(SMALL).fit(flat)
    level = pd.Series(42.0, index=window.index)
    moved = level.copy()
    moved.iloc[100] = 43.0
    assert np.nanmax(detector.score(level).to_numpy()) < 0.99
    assert detector.score(moved).iloc[100] >= 0.99


# -- window start and gaps ----------------------------------------------------------------
def test_points_without_a_full_past_score_zero(detector, window):
    context = detector.config.context_length
    start = window.iloc[:60].interpolate()
    scores = detector.score(start).to_numpy()
    assert (scores[:context] == 0.0).all()
    assert (scores[context:] > 0.0).all()
    low, high = detector.expected_range(start)
    assert np.isnan(low[:context]).all() and not np.isnan(low[context:]).any()
    assert (low[context:] < high[context:]).all()


def test_short_gaps_are_bridged_and_long_ones_restart_the_past(detector, window):
    filled = window.interpolate()
    context, limit = detector.config.context_length, detector.config.fill_limit
    short, long = filled.copy(), filled.copy()
    short.iloc[100 : 100 + limit] = np.nan
    long.iloc[100 : 100 + limit + 1] = np.nan
    end = 100 + limit + 1
    short_scores = detector.score(short).to_numpy()
    long_scores = detector.score(long).to_numpy()
    assert (short_scores[end : end + context] > 0.0).all()
    assert (long_scores[end : end + context - 1] == 0.0).all()
    assert long_scores[end + context] > 0.0


# -- calibration is out of bag ------------------------------------------------------------
def test_out_of_bag_mean_is_sklearns_oob_prediction():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 6))
    target = features[:, 0] + rng.normal(0.0, 0.5, 300)
    forest = RandomForestRegressor(
        n_estimators=25, max_depth=6, random_state=4, n_jobs=1, oob_score=True
    ).fit(features, target)
    mean, std, count = out_of_bag(forest, features)
    seen = count > 0
    np.testing.assert_allclose(mean[seen], forest.oob_prediction_[seen], rtol=1e-10)
    assert (count < 25).all()  # a bootstrap leaves every row out of some trees
    assert np.isfinite(std[count >= 2]).all()


def test_calibration_learns_from_out_of_bag_not_in_sample_scores(detector, history):
    # In-sample, the trees have seen the points: their residuals are far too small.
    in_sample = detector._score_z(history)
    assert detector.calibrator_.threshold_ > 1.2 * np.nanquantile(in_sample, 0.95)


# -- persistence --------------------------------------------------------------------------
def test_save_load_through_skops_gives_identical_scores(detector, window, tmp_path):
    detector.save(tmp_path)
    assert (tmp_path / FOREST_FILE).is_file()
    assert zipfile.is_zipfile(tmp_path / FOREST_FILE)
    loaded = Detector.load(tmp_path)
    assert isinstance(loaded, RandomForestDetector)
    np.testing.assert_array_equal(loaded.score(window), detector.score(window))
    features = np.random.default_rng(1).normal(size=(50, loaded.n_features))
    np.testing.assert_array_equal(
        tree_predictions(loaded.forest_, features), tree_predictions(detector.forest_, features)
    )


class Payload:
    """Stands for anything a forged file could carry: a class from outside the allow-list."""

    def __init__(self) -> None:
        self.command = "rm -rf /"


def _forge(directory, kind: str) -> None:
    path = directory / FOREST_FILE
    if kind == "unknown class":
        sio.dump(Payload(), path)
    elif kind == "function":
        sio.dump({"hook": json.loads}, path)
    elif kind == "another estimator":
        sio.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), path)
    elif kind == "not a zip":
        path.write_bytes(b"\x80\x04 certainly not a skops file")
    elif kind == "missing":
        path.unlink()
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("unknown class", "does not trust.*Payload"),
        ("function", "does not trust.*json.loads"),
        ("another estimator", "LinearRegression, not a fitted forest"),
        ("not a zip", "cannot read the forest"),
        ("missing", "is missing"),
    ],
)
def test_a_tampered_forest_file_is_refused(detector, tmp_path, kind, match):
    detector.save(tmp_path)
    _forge(tmp_path, kind)
    with pytest.raises(ModelFormatError, match=match):
        Detector.load(tmp_path)


def test_a_forest_of_another_shape_is_refused(detector, history, tmp_path):
    detector.save(tmp_path)
    other = RandomForestDetector(RandomForestDetectorConfig(n_estimators=5, n_lags=4)).fit(history)
    other.save(tmp_path / "other")
    (tmp_path / "other" / FOREST_FILE).replace(tmp_path / FOREST_FILE)
    with pytest.raises(ModelFormatError, match="features"):
        Detector.load(tmp_path)


# -- determinism --------------------------------------------------------------------------
def test_same_seed_same_forest_other_seed_other_forest(detector, history, window):
    twin = RandomForestDetector(SMALL).fit(history)
    np.testing.assert_array_equal(twin.score(window), detector.score(window))
    other = RandomForestDetector(RandomForestDetectorConfig(n_estimators=30, max_depth=8, seed=1))
    assert not np.allclose(other.fit(history).score(window), detector.score(window),
                           equal_nan=True)


# -- config -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("n_estimators", 1, ValueError, r"n_estimators=1 must lie in \[2, 1000\]"),
        ("max_depth", 0, ValueError, r"max_depth=0 must lie in \[1, 64\]"),
        ("max_features", 1.5, ValueError, r"max_features=1.5 must lie in \(0, 1\]"),
        ("n_lags", 2.5, TypeError, "n_lags must be an int"),
        ("rolling_lengths", (1,), ValueError, "rolling_lengths=1"),
        ("rolling_lengths", (6, 6), ValueError, "repeats"),
        ("rolling_lengths", 6, TypeError, "rolling_lengths must be a list"),
        ("max_train_points", 10, ValueError, "max_train_points=10"),
        ("seed", True, TypeError, "seed must be an int"),
    ],
)
def test_bad_config_values_are_named(field, value, error, match):
    with pytest.raises(error, match=match):
        RandomForestDetectorConfig(**{field: value})


def test_rolling_lengths_survive_json():
    config = RandomForestDetectorConfig(rolling_lengths=[4, 16])
    assert config.rolling_lengths == (4, 16)
    again = RandomForestDetectorConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and config.context_length == 16


def test_lags_and_calendar_alone_make_a_detector(history, window):
    config = RandomForestDetectorConfig(n_estimators=5, rolling_lengths=(), max_features=1)
    detector = RandomForestDetector(config).fit(history)
    assert config.context_length == config.n_lags
    assert detector.forest_.max_features == 1.0  # all features, not one
    assert len(detector.score(window)) == len(window)


def test_history_with_too_little_past_is_refused(history):
    config = RandomForestDetectorConfig(n_estimators=5, rolling_lengths=(6, 60))
    # The need follows the config: 60 points of past, then 30 rows to learn from.
    assert RandomForestDetector(config).min_history_points() == 90
    with pytest.raises(ValueError, match=r"RandomForestDetector \(random_forest\) needs at "
                                         r"least 90"):
        RandomForestDetector(config).fit(history.iloc[:80])
    # Enough points, but gaps longer than fill_limit leave too few with a full past.
    gappy = history.iloc[:200].copy()
    for start in range(50, 200, 40):
        gappy.iloc[start:start + 4] = np.nan
    with pytest.raises(ValueError, match="with 60 points of past before them; "
                                         "RandomForestDetector needs at least 30"):
        RandomForestDetector(config).fit(gappy)


# -- speed --------------------------------------------------------------------------------
def test_fit_and_window_scoring_are_fast(make_daily_sine):
    # Loose bounds (the targets are ~1 s and ~5 ms): this guards against a slow path sneaking
    # in, such as per-tree predict() calls or a refit per window, without flaking on CI.
    series = make_daily_sine(4360, seed=11)
    history, window = series.iloc[:4000], series.iloc[4000:]
    start = time.perf_counter()
    detector = RandomForestDetector().fit(history)
    fit_s = time.perf_counter() - start
    detector.score(window)
    best_s = min(_timed(detector.score, window) for _ in range(5))
    assert fit_s < 10.0
    assert best_s < 0.1


def _timed(function, argument) -> float:
    start = time.perf_counter()
    function(argument)
    return time.perf_counter() - start


@pytest.mark.parametrize(("value", "error"), [(0.0, ValueError), (1.5, ValueError),
                                              (True, TypeError), ("half", TypeError)])
def test_a_bad_max_samples_is_refused_naming_the_field(value, error):
    from models.random_forest import RandomForestDetectorConfig

    with pytest.raises(error, match="max_samples"):
        RandomForestDetectorConfig(max_samples=value)
