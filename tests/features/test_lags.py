"""Tests of the causal lag/rolling/calendar feature matrix."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.lags import (
    CALENDAR_COLUMNS,
    build_lag_features,
    carry_forward,
    feature_columns,
)


def _series(values, start: str = "2026-01-05T00:00Z", freq: str = "5min") -> pd.Series:
    index = pd.date_range(start, periods=len(values), freq=freq)
    return pd.Series(np.asarray(values, dtype="float64"), index=index, name="value")


@pytest.fixture(scope="module")
def noisy() -> pd.Series:
    values = np.random.default_rng(5).normal(10.0, 3.0, 200)
    values[[40, 41, 90, 130, 131, 132, 133, 134]] = np.nan
    return _series(values)


# -- shape --------------------------------------------------------------------------------
def test_columns_and_index():
    series = _series(np.arange(30.0))
    frame = build_lag_features(series, n_lags=3, rolling_lengths=(4, 8))
    assert list(frame.columns) == feature_columns(3, (4, 8))
    assert list(frame.columns) == [
        "lag_1", "lag_2", "lag_3",
        "mean_4", "std_4", "min_4", "max_4",
        "mean_8", "std_8", "min_8", "max_8",
        *CALENDAR_COLUMNS,
    ]  # fmt: skip
    assert frame.index.equals(series.index)
    assert (frame.dtypes == np.float64).all()


def test_input_is_left_alone(noisy):
    copy = noisy.copy()
    build_lag_features(copy, n_lags=5, rolling_lengths=(3, 10), fill_limit=2)
    pd.testing.assert_series_equal(copy, noisy)


# -- causality ----------------------------------------------------------------------------
@pytest.mark.parametrize("fill_limit", [0, 3])
@pytest.mark.parametrize("t", [0, 1, 5, 39, 42, 100, 133, 199])
def test_changing_y_t_or_later_never_changes_row_t(noisy, fill_limit, t):
    kwargs = {"n_lags": 6, "rolling_lengths": (3, 12), "fill_limit": fill_limit}
    before = build_lag_features(noisy, **kwargs)
    changed = noisy.copy()
    rng = np.random.default_rng(t)
    changed.iloc[t:] = rng.normal(1000.0, 500.0, len(noisy) - t)
    changed.iloc[t::7] = np.nan  # gaps in the future must not leak back either
    after = build_lag_features(changed, **kwargs)
    pd.testing.assert_frame_equal(after.iloc[: t + 1], before.iloc[: t + 1])


def test_row_features_use_only_the_points_before_it():
    # Each row's lags and windows hold exactly the previous values, never its own.
    series = _series(np.arange(1.0, 41.0))
    frame = build_lag_features(series, n_lags=5, rolling_lengths=(5,))
    for t in range(5, 40):
        assert frame["lag_1"].iloc[t] == series.iloc[t - 1]
        assert frame["max_5"].iloc[t] == series.iloc[t - 1] < series.iloc[t]


# -- values by hand -----------------------------------------------------------------------
def test_lag_and_rolling_values_by_hand():
    series = _series([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    frame = build_lag_features(series, n_lags=3, rolling_lengths=(3,))
    row = frame.iloc[5]  # past: 16, 8, 4 (then 2)
    assert (row["lag_1"], row["lag_2"], row["lag_3"]) == (16.0, 8.0, 4.0)
    assert row["mean_3"] == pytest.approx(28.0 / 3.0)
    # Population std of (4, 8, 16): mean 28/3, squared deviations sum to 224/3 over 3 points.
    assert row["std_3"] == pytest.approx(math.sqrt(224.0 / 9.0))
    assert (row["min_3"], row["max_3"]) == (4.0, 16.0)
    row = frame.iloc[3]  # past: 4, 2, 1
    assert (row["lag_1"], row["lag_3"], row["mean_3"]) == (4.0, 1.0, pytest.approx(7.0 / 3.0))


def test_rows_without_enough_past_are_nan():
    frame = build_lag_features(_series(np.arange(10.0)), n_lags=3, rolling_lengths=(4,))
    assert frame[["lag_1", "lag_2", "lag_3"]].iloc[0].isna().all()
    assert frame["lag_1"].iloc[1] == 0.0 and np.isnan(frame["lag_2"].iloc[1])
    assert not frame[["lag_1", "lag_2", "lag_3"]].iloc[3].isna().any()
    assert frame["mean_4"].iloc[:4].isna().all()
    assert frame["mean_4"].iloc[4] == pytest.approx(1.5)
    assert not frame[list(CALENDAR_COLUMNS)].isna().any().any()


def test_calendar_values_by_hand():
    # 2026-01-05 is a Monday, 2026-01-10 a Saturday.
    index = pd.DatetimeIndex(
        ["2026-01-05T06:00Z", "2026-01-05T12:00Z", "2026-01-10T18:00Z", "2026-01-11T00:00Z"]
    )
    frame = build_lag_features(pd.Series([1.0, 2.0, 3.0, 4.0], index=index), n_lags=1,
                               rolling_lengths=())
    np.testing.assert_allclose(frame["hour_sin"], [1.0, 0.0, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(frame["hour_cos"], [0.0, -1.0, 0.0, 1.0], atol=1e-12)
    saturday, sunday = 2 * np.pi * 5 / 7, 2 * np.pi * 6 / 7
    np.testing.assert_allclose(frame["dow_sin"], [0.0, 0.0, np.sin(saturday), np.sin(sunday)],
                               atol=1e-12)
    np.testing.assert_allclose(frame["dow_cos"], [1.0, 1.0, np.cos(saturday), np.cos(sunday)],
                               atol=1e-12)
    np.testing.assert_array_equal(frame["is_weekend"], [0.0, 0.0, 1.0, 1.0])


def test_calendar_is_in_utc_whatever_the_index_zone():
    series = _series(np.arange(50.0), freq="37min")
    paris = series.copy()
    paris.index = series.index.tz_convert("Europe/Paris").as_unit("s")
    naive = series.copy()
    naive.index = series.index.tz_localize(None)
    expected = build_lag_features(series, n_lags=2, rolling_lengths=(3,)).to_numpy()
    for other in (paris, naive):
        actual = build_lag_features(other, n_lags=2, rolling_lengths=(3,)).to_numpy()
        np.testing.assert_array_equal(actual, expected)


# -- gaps ---------------------------------------------------------------------------------
def test_a_gap_makes_lags_and_windows_over_it_nan():
    values = np.arange(1.0, 13.0)
    values[4] = np.nan
    frame = build_lag_features(_series(values), n_lags=2, rolling_lengths=(3,))
    assert np.isnan(frame["lag_1"].iloc[5]) and frame["lag_2"].iloc[5] == 4.0
    assert np.isnan(frame["lag_2"].iloc[6]) and frame["lag_1"].iloc[6] == 6.0
    assert frame["mean_3"].iloc[5:8].isna().all()  # windows holding position 4
    assert frame["mean_3"].iloc[8] == pytest.approx(7.0)
    assert frame["mean_3"].iloc[4] == pytest.approx(3.0)  # the gap's own row: its past is whole


def test_fill_limit_bridges_short_gaps_from_the_past():
    values = np.arange(1.0, 13.0)
    values[4] = np.nan
    frame = build_lag_features(_series(values), n_lags=2, rolling_lengths=(3,), fill_limit=1)
    assert frame["lag_1"].iloc[5] == 4.0  # position 4 carries position 3's value
    assert frame["mean_3"].iloc[6] == pytest.approx((4.0 + 4.0 + 6.0) / 3.0)
    assert not frame.iloc[3:].isna().any().any()


def test_gaps_longer_than_fill_limit_stay_whole():
    values = np.array([1.0, 2.0, np.nan, np.nan, np.nan, 6.0, 7.0, np.nan, 9.0])
    np.testing.assert_array_equal(
        carry_forward(values, 2), [1.0, 2.0, np.nan, np.nan, np.nan, 6.0, 7.0, 7.0, 9.0]
    )
    np.testing.assert_array_equal(
        carry_forward(values, 3), [1.0, 2.0, 2.0, 2.0, 2.0, 6.0, 7.0, 7.0, 9.0]
    )
    np.testing.assert_array_equal(carry_forward(values, 0), values)


def test_leading_gaps_are_never_filled():
    out = carry_forward(np.array([np.nan, np.nan, 3.0, np.nan]), 5)
    np.testing.assert_array_equal(out, [np.nan, np.nan, 3.0, 3.0])


# -- bad arguments ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_lags": 0}, ValueError, "n_lags=0"),
        ({"rolling_lengths": (1,)}, ValueError, "rolling_lengths"),
        ({"rolling_lengths": (4, 4)}, ValueError, "distinct"),
        ({"fill_limit": -1}, ValueError, "fill_limit=-1"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_lag_features(_series(np.arange(10.0)), **kwargs)


@pytest.mark.parametrize("bad", [np.arange(5.0), pd.Series(np.arange(5.0))])
def test_non_series_or_non_datetime_index_is_a_type_error(bad):
    with pytest.raises(TypeError, match="series"):
        build_lag_features(bad)
