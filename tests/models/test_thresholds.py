"""Behaviour of the threshold detectors: what they flag, what they leave alone, edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from models import (
    EXPECTED_RANGE_SCORE,
    DynamicThresholdDetector,
    StaticThresholdDetector,
    WindowBaselineDetector,
    make_detector,
)
from models.base import Z_AT_EXPECTED_RANGE_SCORE, z_to_score
from models.seasonality import detect_season, robust_scale
from models.thresholds import (
    DynamicThresholdConfig,
    StaticThresholdConfig,
    WindowBaselineConfig,
)

#: The shared fixtures (tests/models/conftest.py) are 5-minute data with a daily sine.
STEP = pd.Timedelta("5min")
POINTS_PER_DAY = 288
THRESHOLD_DETECTORS = ["static_threshold", "dynamic_threshold", "window_baseline"]
SPIKE_AT = 150


@pytest.fixture(scope="module")
def fitted(history) -> dict[str, object]:
    return {name: make_detector(name).fit(history) for name in THRESHOLD_DETECTORS}


def _clean_window(daily: pd.Series) -> pd.Series:
    return daily.iloc[-POINTS_PER_DAY:].copy()


def test_z_to_score_maps_the_threshold_z_to_0_99():
    at = z_to_score(np.array([Z_AT_EXPECTED_RANGE_SCORE]))[0]
    assert at == pytest.approx(EXPECTED_RANGE_SCORE, abs=1e-12)
    assert z_to_score(np.array([0.0]))[0] == 0.0
    out = z_to_score(np.array([-1.0, 1.0, np.nan, 40.0]))
    assert out[0] == out[1]
    assert np.isnan(out[2]) and out[3] == 1.0


@pytest.mark.parametrize("name", THRESHOLD_DETECTORS)
def test_planted_spike_scores_high_and_normal_points_mostly_low(name, fitted, daily):
    window = _clean_window(daily)
    window.iloc[SPIKE_AT] += 40.0  # 40 noise sigmas, twice the daily swing
    scores = fitted[name].score(window).to_numpy()
    assert scores[SPIKE_AT] >= 0.99
    normal = np.delete(scores, SPIKE_AT)
    assert np.mean(normal >= 0.99) < 0.10
    assert np.median(normal) < 0.9


@pytest.mark.parametrize("name", THRESHOLD_DETECTORS)
def test_a_dip_is_anomalous_too(name, fitted, daily):
    window = _clean_window(daily)
    window.iloc[SPIKE_AT] -= 40.0
    assert fitted[name].score(window).iloc[SPIKE_AT] >= 0.99


# -- static threshold ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def cpu_history() -> pd.Series:
    rng = np.random.default_rng(11)
    index = pd.date_range("2026-01-05T00:00Z", periods=500, freq=STEP)
    return pd.Series(np.clip(rng.normal(50.0, 5.0, 500), 0, 100), index=index)


def _at(values: list[float]) -> pd.Series:
    index = pd.date_range("2026-01-07T00:00Z", periods=len(values), freq=STEP)
    return pd.Series(values, index=index, dtype="float64")


def test_static_configured_upper_scores_0_99_on_the_bound_and_more_beyond(cpu_history):
    detector = StaticThresholdDetector(StaticThresholdConfig(upper=90.0)).fit(cpu_history)
    assert detector.upper_ == 90.0
    scores = detector.score(_at([50.0, 70.0, 89.0, 90.0, 95.0, 100.0])).to_numpy()
    assert scores[3] == pytest.approx(0.99, abs=1e-9)
    assert scores[2] < 0.99 < scores[4] < scores[5]
    assert scores[0] < 0.05  # the median is the calmest point
    assert scores[0] < scores[1] < scores[2]


def test_static_configured_lower_and_upper(cpu_history):
    detector = StaticThresholdDetector(StaticThresholdConfig(lower=10.0, upper=90.0)).fit(
        cpu_history
    )
    scores = detector.score(_at([10.0, 5.0, 90.0])).to_numpy()
    assert scores[0] == pytest.approx(0.99, abs=1e-9)
    assert scores[1] > 0.99
    low, high = detector.expected_range(_at([1.0, 2.0]))
    assert low.tolist() == [10.0, 10.0] and high.tolist() == [90.0, 90.0]


def test_static_learned_bounds_bracket_the_history(cpu_history):
    detector = StaticThresholdDetector().fit(cpu_history)
    assert detector.lower_ < cpu_history.min() and detector.upper_ > cpu_history.max()
    assert (detector.score(cpu_history) < 0.99).all()


def test_static_ignores_nan_in_history(cpu_history):
    gappy = cpu_history.copy()
    gappy.iloc[::7] = np.nan
    detector = StaticThresholdDetector().fit(gappy)
    assert np.isfinite([detector.lower_, detector.upper_, detector.median_]).all()


# -- dynamic threshold --------------------------------------------------------------------
def test_detect_season_finds_a_daily_cycle(history):
    assert len(history) >= 3 * POINTS_PER_DAY
    assert detect_season(history, STEP) == "1D"


@pytest.mark.parametrize("n_days", [9, 14])
def test_detect_season_finds_a_working_week(n_days):
    # Business traffic: a daily cycle on weekdays, much quieter weekends. One weekend is
    # enough for the weekday/weekend profile; a full weekly profile would need two weeks.
    rng = np.random.default_rng(1)
    index = pd.date_range("2026-01-05T00:00Z", periods=n_days * 24, freq="1h")  # a Monday
    t = np.arange(len(index))
    weekend = (index.day_of_week >= 5).astype(float)
    values = 50 + 10 * np.sin(2 * np.pi * t / 24) - 30 * weekend + rng.normal(0, 1, len(t))
    assert detect_season(pd.Series(values, index=index), pd.Timedelta("1h")) == "workweek"


def test_detect_season_finds_a_weekly_sine_in_two_weeks():
    # Two weeks are enough: each week is predicted from the other one.
    rng = np.random.default_rng(1)
    index = pd.date_range("2026-01-05T00:00Z", periods=14 * 24, freq="1h")
    t = np.arange(len(index))
    weekly = pd.Series(10 * np.sin(2 * np.pi * t / 168) + rng.normal(0, 1, len(t)), index=index)
    assert detect_season(weekly, pd.Timedelta("1h")) == "7D"


def test_detect_season_finds_nothing_in_white_noise(history):
    noise = pd.Series(np.random.default_rng(5).normal(0, 1, len(history)), index=history.index)
    assert detect_season(noise, STEP) == "none"


def test_detect_season_needs_two_full_cycles(make_daily_sine):
    short = make_daily_sine(int(1.5 * POINTS_PER_DAY), seed=2)
    assert detect_season(short, STEP) == "none"


def test_detect_season_of_a_flat_series_is_none(history):
    assert detect_season(pd.Series(3.0, index=history.index), STEP) == "none"


def test_dynamic_learns_a_daily_profile(fitted, history):
    detector = fitted["dynamic_threshold"]
    assert detector.season_ == "1D"
    assert len(detector.profile_) == POINTS_PER_DAY
    truth = 50.0 + 10.0 * np.sin(2 * np.pi * np.arange(POINTS_PER_DAY) / POINTS_PER_DAY)
    assert np.max(np.abs(detector.profile_ - truth)) < 2.0


def test_dynamic_without_season_on_white_noise(history):
    noise = pd.Series(np.random.default_rng(5).normal(0, 1, len(history)), index=history.index)
    detector = DynamicThresholdDetector().fit(noise)
    assert detector.season_ == "none"
    assert len(detector.profile_) == 1


@pytest.mark.parametrize(("season", "expected"), [("1D", "1D"), ("none", "none"), ("workweek", "workweek")])
def test_dynamic_forced_season(history, season, expected):
    detector = DynamicThresholdDetector(DynamicThresholdConfig(season=season)).fit(history)
    assert detector.season_ == expected


def test_dynamic_expected_range_follows_the_cycle_and_holds_most_points(fitted, daily):
    window = _clean_window(daily)
    low, high = fitted["dynamic_threshold"].expected_range(window)
    inside = (window.to_numpy() >= low) & (window.to_numpy() <= high)
    # The range is the 99 % band of held-out cycles: nearly every normal point is inside.
    assert inside.mean() >= 0.96
    peak, trough = POINTS_PER_DAY // 4, 3 * POINTS_PER_DAY // 4
    assert low[peak] > high[trough]  # the range moves with the time of day


def test_dynamic_flags_a_daytime_value_at_night_where_static_cannot(fitted, daily):
    window = _clean_window(daily)
    trough = 3 * POINTS_PER_DAY // 4
    window.iloc[trough] = 60.0  # the usual level at the daily peak
    assert fitted["dynamic_threshold"].score(window).iloc[trough] >= 0.99
    assert fitted["static_threshold"].score(window).iloc[trough] < 0.99


def test_dynamic_with_gaps_in_history(history, window):
    gappy = history.copy()
    gappy.iloc[100:160] = np.nan  # five hours missing
    detector = DynamicThresholdDetector().fit(gappy)
    assert np.isfinite(detector.profile_).all()
    scores = detector.score(window)
    assert scores.notna().sum() == window.notna().sum()


# -- constant history then a change ------------------------------------------------------
@pytest.mark.parametrize("name", ["static_threshold", "dynamic_threshold"])
@pytest.mark.parametrize("level", [0.0, 5.0, -1200.0])
def test_constant_history_then_a_change(name, level):
    index = pd.date_range("2026-01-05T00:00Z", periods=3 * POINTS_PER_DAY, freq=STEP)
    history = pd.Series(level, index=index)
    later = pd.date_range(index[-1] + STEP, periods=20, freq=STEP)
    window = pd.Series([level] * 10 + [level + 1.0] * 10, index=later)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no invalid value
        scores = make_detector(name).fit(history).score(window).to_numpy()
    assert not np.isnan(scores).any()
    assert (scores[:10] < 0.5).all()  # the level it always had is normal
    assert (scores[10:] > 0.999).all()


def test_static_constant_history_with_a_configured_upper():
    index = pd.date_range("2026-01-05T00:00Z", periods=100, freq=STEP)
    detector = StaticThresholdDetector(StaticThresholdConfig(upper=90.0)).fit(
        pd.Series(40.0, index=index)
    )
    scores = detector.score(_at([40.0, 90.0, 39.0])).to_numpy()
    assert scores[0] < 0.5
    assert scores[1] == pytest.approx(0.99, abs=1e-9)
    assert scores[2] > 0.999


def test_robust_scale_floors():
    assert robust_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == pytest.approx(1.4826)
    assert robust_scale(np.array([5.0] * 9 + [6.0])) > 0  # MAD 0, mean deviation not
    assert robust_scale(np.array([5.0] * 10)) == pytest.approx(6e-6)
    assert robust_scale(np.array([np.nan, np.inf])) == 1.0


# -- window baseline ----------------------------------------------------------------------
def test_window_baseline_flat_then_jump():
    detector = WindowBaselineDetector()
    rng = np.random.default_rng(4)
    flat = 10.0 + rng.normal(0.0, 0.1, 40)
    values = np.concatenate([flat, [13.0], 10.0 + rng.normal(0.0, 0.1, 5)])
    window = pd.Series(
        values, index=pd.date_range("2026-01-05T00:00Z", periods=len(values), freq="10s")
    )
    scores = detector.score(window).to_numpy()
    periods = detector.config.min_periods
    assert (scores[:periods] == 0.0).all()  # too little past to judge
    assert np.mean(scores[periods:40] >= 0.99) <= 0.1
    assert scores[40] >= 0.999
    assert (scores[41:] < 0.99).all()  # one jump does not move the median
    low, high = detector.expected_range(window)
    assert np.isnan(low[:periods]).all()
    assert low[40] < 10.0 < high[40] < 13.0


def test_window_baseline_is_calibrated_on_white_noise():
    rng = np.random.default_rng(9)
    noise = pd.Series(
        rng.normal(0.0, 1.0, 400), index=pd.date_range("2026-01-05T00:00Z", periods=400, freq="10s")
    )
    detector = WindowBaselineDetector()
    scores = detector.score(noise).to_numpy()
    periods = detector.config.min_periods
    # Right after the warm-up the spread must already be the data's, not the tiny floor.
    assert np.mean(scores[periods : 2 * periods] >= 0.99) <= 0.1
    assert np.mean(scores >= 0.99) < 0.03
    low, high = detector.expected_range(noise)
    width = (high - low)[periods:]
    assert 2.0 < np.median(width) < 8.0  # about 2 × 2.58 σ


def test_window_baseline_perfectly_flat_then_jump():
    window = pd.Series(
        [7.0] * 30 + [7.5], index=pd.date_range("2026-01-05T00:00Z", periods=31, freq="10s")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = WindowBaselineDetector().score(window).to_numpy()
    assert (scores[:30] == 0.0).all()
    assert scores[30] > 0.999


def test_window_baseline_learns_nothing_from_history(history, window):
    unfitted = WindowBaselineDetector().score(window)
    fitted = WindowBaselineDetector().fit(history * 100).score(window)
    np.testing.assert_array_equal(unfitted.to_numpy(), fitted.to_numpy())


# -- config validation across fields ------------------------------------------------------
@pytest.mark.parametrize(
    ("factory", "values", "named"),
    [
        (StaticThresholdConfig, {"lower": 90.0, "upper": 10.0}, "lower"),
        (StaticThresholdConfig, {"quantile": 1.0}, "quantile"),
        (StaticThresholdConfig, {"quantile": 0.5}, "quantile"),
        (DynamicThresholdConfig, {"season": "2D"}, "season"),
        (DynamicThresholdConfig, {"min_periods": 61}, "min_periods"),
        (DynamicThresholdConfig, {"slot_s": 0}, "slot_s"),
        (DynamicThresholdConfig, {"min_improvement": 1.0}, "min_improvement"),
        (WindowBaselineConfig, {"window_length": 10, "min_periods": 11}, "min_periods"),
        (WindowBaselineConfig, {"min_periods": 1}, "min_periods"),
    ],
)
def test_config_errors_name_the_field_and_value(factory, values, named):
    with pytest.raises(ValueError, match=named) as error:
        factory(**values)
    assert str(values[named]) in str(error.value)
