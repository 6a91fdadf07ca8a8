"""Tests of step inference, resampling with gaps, and splitting long frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.schema import IS_ANOMALY, METRIC, SERVICE, TIMESTAMP, VALUE
from features.series import (
    infer_step,
    resample_series,
    split_series,
    to_labels,
    to_series,
)
from features.validation import validate_frame


def test_infer_step_is_the_median_spacing():
    regular = pd.date_range("2026-01-05", periods=20, freq="10s", tz="UTC")
    # Drop a few points: the gaps must not move the median.
    gappy = regular.delete([3, 4, 11])
    assert infer_step(gappy) == pd.Timedelta("10s")
    assert infer_step(pd.date_range("2026-01-05", periods=5, freq="1h", tz="UTC", unit="s")) == (
        pd.Timedelta("1h")
    )


@pytest.mark.parametrize("n", [0, 1])
def test_infer_step_needs_two_points(n):
    index = pd.date_range("2026-01-05", periods=n, freq="1min", tz="UTC")
    with pytest.raises(ValueError, match="at least 2"):
        infer_step(index)


def _series(offsets_s, values) -> pd.Series:
    index = pd.Timestamp("2026-01-05T10:00Z") + pd.to_timedelta(offsets_s, unit="s")
    return pd.Series(values, index=pd.DatetimeIndex(index), dtype="float64")


def test_resample_averages_within_a_bucket_and_labels_by_left_edge():
    series = _series([0, 3, 7, 10, 15], [1.0, 2.0, 6.0, 10.0, 20.0])
    out = resample_series(series, "10s")
    assert list(out.index) == list(pd.to_datetime(["2026-01-05T10:00:00Z", "2026-01-05T10:00:10Z"]))
    assert out.tolist() == [3.0, 15.0]


def test_resample_keeps_a_missing_bucket_as_nan_not_zero():
    series = _series([0, 10, 40, 50], [1.0, 2.0, 3.0, 4.0])
    out = resample_series(series, "10s")
    assert len(out) == 6
    assert out.iloc[[0, 1, 4, 5]].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert out.iloc[2:4].isna().all()
    assert not (out == 0).any()


def test_resample_a_bucket_of_only_nan_is_nan():
    series = _series([0, 5, 10], [np.nan, np.nan, 7.0])
    out = resample_series(series, "10s")
    assert np.isnan(out.iloc[0]) and out.iloc[1] == 7.0


def test_resample_accepts_minute_shorthand_and_keeps_utc():
    index = pd.date_range("2026-01-05T10:00Z", periods=6, freq="30s")
    out = resample_series(pd.Series(np.arange(6.0), index=index), "1m")
    assert out.tolist() == [0.5, 2.5, 4.5]
    assert str(out.index.tz) == "UTC"
    assert out.dtype == np.float64


def test_resample_refuses_a_non_datetime_index():
    with pytest.raises(TypeError, match="DatetimeIndex"):
        resample_series(pd.Series([1.0, 2.0]), "10s")


def test_resample_empty_series_is_empty_float():
    empty = pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype="int64")
    out = resample_series(empty, "10s")
    assert out.empty and out.dtype == np.float64


@pytest.fixture
def long_frame() -> pd.DataFrame:
    stamps = ["2026-01-05T00:00Z", "2026-01-05T00:01Z", "2026-01-05T00:02Z"]
    return validate_frame(
        pd.DataFrame(
            {
                TIMESTAMP: stamps * 2,
                SERVICE: ["web"] * 3 + ["api"] * 3,
                METRIC: "cpu",
                VALUE: [1.0, np.nan, 3.0, 10.0, 20.0, 30.0],
                IS_ANOMALY: [False, False, True, False, False, False],
            }
        )
    )


def test_split_series_yields_each_series_in_key_order(long_frame):
    parts = list(split_series(long_frame))
    assert [key for key, _ in parts] == [("api", "cpu"), ("web", "cpu")]
    assert all(isinstance(k, str) for key, _ in parts for k in key)
    assert parts[0][1][VALUE].tolist() == [10.0, 20.0, 30.0]
    assert len(parts[1][1]) == 3


def test_to_series_and_to_labels(long_frame):
    (_, _), (_, web) = list(split_series(long_frame))
    series = to_series(web)
    assert isinstance(series.index, pd.DatetimeIndex)
    assert str(series.index.tz) == "UTC"
    assert series.index.is_monotonic_increasing
    assert series.dtype == np.float64
    assert series.iloc[0] == 1.0 and np.isnan(series.iloc[1]) and series.iloc[2] == 3.0
    labels = to_labels(web)
    assert labels.dtype == bool
    assert labels.tolist() == [False, False, True]
    assert labels.index.equals(series.index)


def test_to_labels_without_labels_is_none(long_frame):
    assert to_labels(long_frame.drop(columns=IS_ANOMALY)) is None
