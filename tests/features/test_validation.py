"""Tests of validate_frame, parse_timestamps and parse_values: every bad input is located."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from features.schema import IS_ANOMALY, METRIC, SERVICE, TIMESTAMP, VALUE, DataValidationError
from features.validation import parse_timestamps, parse_values, validate_frame

FILE = "data/checkout.csv"


def _frame(timestamps, values, service="checkout", metric="cpu", **extra) -> pd.DataFrame:
    return pd.DataFrame(
        {TIMESTAMP: timestamps, SERVICE: service, METRIC: metric, VALUE: values, **extra}
    )


def _expect(error: pytest.ExceptionInfo, *, column: str, row: int | None, file: str | None = FILE):
    """The attributes and the message both name the file, column and row."""
    err = error.value
    assert isinstance(err, DataValidationError)
    assert (err.file, err.column, err.row) == (file, column, row)
    message = str(err)
    if file is not None:
        assert file in message
    assert repr(column) in message
    if row is not None:
        assert f"row {row}" in message


UTC_STAMPS = ["2026-01-05T00:00Z", "2026-01-05T00:01Z", "2026-01-05T00:02Z", "2026-01-05T00:03Z"]


# -- missing columns and names ------------------------------------------------------------
@pytest.mark.parametrize("column", [TIMESTAMP, SERVICE, METRIC, VALUE])
def test_missing_column_is_named(column):
    frame = _frame(UTC_STAMPS, [1.0, 2.0, 3.0, 4.0]).drop(columns=column)
    with pytest.raises(DataValidationError) as error:
        validate_frame(frame, file=FILE)
    _expect(error, column=column, row=None)
    assert "missing column" in str(error.value)


@pytest.mark.parametrize("bad_name", ["", "   ", None])
@pytest.mark.parametrize("column", [SERVICE, METRIC])
def test_empty_service_or_metric_name_names_the_row(column, bad_name):
    frame = _frame(UTC_STAMPS, [1.0, 2.0, 3.0, 4.0])
    frame[column] = ["a", "a", bad_name, "a"]
    with pytest.raises(DataValidationError) as error:
        validate_frame(frame, file=FILE)
    _expect(error, column=column, row=2)


def test_not_a_frame_is_a_type_error():
    with pytest.raises(TypeError, match="DataFrame"):
        validate_frame([{"timestamp": "2026-01-05T00:00Z"}])


# -- values -------------------------------------------------------------------------------
def test_non_numeric_value_names_file_column_and_row():
    frame = _frame(UTC_STAMPS, ["1.5", "2", "n/a?", "4"])
    with pytest.raises(DataValidationError) as error:
        validate_frame(frame, file=FILE)
    _expect(error, column=VALUE, row=2)
    assert "'n/a?'" in str(error.value)


def test_the_first_bad_value_is_reported():
    frame = _frame(UTC_STAMPS, ["1", "x", "3", "y"])
    with pytest.raises(DataValidationError) as error:
        validate_frame(frame, file=FILE)
    assert error.value.row == 1


def test_nan_and_empty_values_stay_nan_never_zero():
    frame = _frame(UTC_STAMPS, ["1.5", "", "nan", "4"])
    out = validate_frame(frame)
    values = out[VALUE].to_numpy()
    assert out[VALUE].dtype == np.float64
    assert values[0] == 1.5 and values[3] == 4.0
    assert np.isnan(values[1]) and np.isnan(values[2])


def test_numeric_nan_is_kept():
    out = validate_frame(_frame(UTC_STAMPS, [1.0, np.nan, 0.0, 2.0]))
    assert np.isnan(out[VALUE].iloc[1])
    assert out[VALUE].iloc[2] == 0.0


def test_parse_values_refuses_booleans():
    with pytest.raises(DataValidationError, match="boolean"):
        parse_values(pd.Series([True, False]), file=FILE)


def test_parse_values_row_follows_an_integer_index():
    with pytest.raises(DataValidationError) as error:
        parse_values(pd.Series(["1", "2", "high"], index=[10, 11, 12]), file=FILE)
    _expect(error, column=VALUE, row=12)


def test_parse_values_integers_become_float64():
    out = parse_values(pd.Series([1, 2, 3]))
    assert out.dtype == np.float64
    assert out.tolist() == [1.0, 2.0, 3.0]


# -- timestamps ---------------------------------------------------------------------------
def test_unparsable_timestamp_names_the_row():
    stamps = ["2026-01-05T00:00Z", "2026-01-05T00:01Z", "yesterday", "2026-01-05T00:03Z"]
    with pytest.raises(DataValidationError) as error:
        validate_frame(_frame(stamps, [1.0, 2.0, 3.0, 4.0]), file=FILE)
    _expect(error, column=TIMESTAMP, row=2)
    assert "'yesterday'" in str(error.value)


def test_impossible_date_is_unparsable():
    stamps = ["2026-01-05T00:00Z", "2026-13-05T00:01Z"]
    with pytest.raises(DataValidationError) as error:
        validate_frame(_frame(stamps, [1.0, 2.0]), file=FILE)
    _expect(error, column=TIMESTAMP, row=1)


def test_missing_timestamp_names_the_row():
    with pytest.raises(DataValidationError) as error:
        parse_timestamps(pd.Series(["2026-01-05T00:00Z", None, "2026-01-05T00:02Z"]), file=FILE)
    _expect(error, column=TIMESTAMP, row=1)


def test_naive_text_timestamps_are_refused_by_default():
    stamps = ["2026-01-05T00:00Z", "2026-01-05 00:01", "2026-01-05T00:02Z"]
    with pytest.raises(DataValidationError) as error:
        validate_frame(_frame(stamps, [1.0, 2.0, 3.0]), file=FILE)
    _expect(error, column=TIMESTAMP, row=1)
    assert "timezone" in str(error.value)


def test_naive_datetime_column_is_refused_by_default():
    stamps = pd.date_range("2026-01-05", periods=3, freq="1min")
    with pytest.raises(DataValidationError) as error:
        validate_frame(_frame(stamps, [1.0, 2.0, 3.0]), file=FILE)
    assert error.value.column == TIMESTAMP
    assert error.value.file == FILE


def test_naive_timestamps_read_as_utc_when_asked():
    text = ["2026-01-05 00:00", "2026-01-05 00:01", "2026-01-05 00:02"]
    from_text = validate_frame(_frame(text, [1.0, 2.0, 3.0]), naive_timestamps="utc")
    naive = pd.date_range("2026-01-05", periods=3, freq="1min")
    from_datetimes = validate_frame(_frame(naive, [1.0, 2.0, 3.0]), naive_timestamps="utc")
    expected = pd.date_range("2026-01-05", periods=3, freq="1min", tz="UTC")
    for out in (from_text, from_datetimes):
        assert str(out[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
        assert list(out[TIMESTAMP]) == list(expected)


def test_offsets_are_converted_to_utc():
    stamps = ["2026-01-05T01:00+01:00", "2026-01-05T00:01Z", "2026-01-04T19:02-05:00"]
    out = validate_frame(_frame(stamps, [1.0, 2.0, 3.0]))
    expected = pd.to_datetime(["2026-01-05T00:00Z", "2026-01-05T00:01Z", "2026-01-05T00:02Z"])
    assert list(out[TIMESTAMP]) == list(expected)
    assert out[VALUE].tolist() == [1.0, 2.0, 3.0]


def test_zoned_datetime_column_is_converted_to_utc_ns():
    # second resolution and a named zone: both normalised.
    stamps = pd.date_range("2026-01-05 09:00", periods=3, freq="1min", tz="Europe/Paris", unit="s")
    out = validate_frame(_frame(stamps, [1, 2, 3]))
    assert str(out[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert out[TIMESTAMP].iloc[0] == pd.Timestamp("2026-01-05T08:00Z")


# -- order and duplicates -----------------------------------------------------------------
def test_out_of_order_rows_within_a_series_name_the_row():
    stamps = ["2026-01-05T00:00Z", "2026-01-05T00:02Z", "2026-01-05T00:01Z", "2026-01-05T00:03Z"]
    with pytest.raises(DataValidationError) as error:
        validate_frame(_frame(stamps, [1.0, 2.0, 3.0, 4.0]), file=FILE)
    _expect(error, column=TIMESTAMP, row=2)
    assert "checkout/cpu" in str(error.value)


def test_interleaved_series_are_each_in_order_and_get_sorted():
    frame = pd.DataFrame(
        {
            TIMESTAMP: [
                "2026-01-05T00:00Z",
                "2026-01-05T00:00Z",
                "2026-01-05T00:01Z",
                "2026-01-05T00:01Z",
            ],
            SERVICE: ["web", "api", "web", "api"],
            METRIC: "cpu",
            VALUE: [1.0, 10.0, 2.0, 20.0],
        }
    )
    out = validate_frame(frame)
    assert out[SERVICE].tolist() == ["api", "api", "web", "web"]
    assert out[VALUE].tolist() == [10.0, 20.0, 1.0, 2.0]
    assert list(out.index) == [0, 1, 2, 3]


def test_a_later_series_starting_earlier_is_not_out_of_order():
    frame = pd.DataFrame(
        {
            TIMESTAMP: ["2026-01-05T00:05Z", "2026-01-05T00:06Z", "2026-01-05T00:00Z"],
            SERVICE: ["web", "web", "web"],
            METRIC: ["cpu", "cpu", "mem"],
            VALUE: [1.0, 2.0, 3.0],
        }
    )
    out = validate_frame(frame)
    assert out[METRIC].tolist() == ["cpu", "cpu", "mem"]


DUPLICATED = ["2026-01-05T00:00Z", "2026-01-05T00:01Z", "2026-01-05T00:01Z", "2026-01-05T00:02Z"]


def test_duplicated_timestamps_are_refused_by_default():
    with pytest.raises(DataValidationError) as error:
        validate_frame(_frame(DUPLICATED, [1.0, 2.0, 4.0, 5.0]), file=FILE)
    _expect(error, column=TIMESTAMP, row=2)
    assert "twice" in str(error.value)


def test_same_timestamp_in_two_series_is_not_a_duplicate():
    frame = _frame(["2026-01-05T00:00Z"] * 2, [1.0, 2.0], service=["a", "b"])
    assert len(validate_frame(frame)) == 2


@pytest.mark.parametrize(("policy", "merged"), [("first", 2.0), ("last", 4.0), ("mean", 3.0)])
def test_duplicates_are_merged_by_policy(policy, merged, caplog):
    with caplog.at_level(logging.WARNING, logger="features.validation"):
        out = validate_frame(_frame(DUPLICATED, [1.0, 2.0, 4.0, 5.0]), duplicates=policy)
    assert out[VALUE].tolist() == [1.0, merged, 5.0]
    assert out[TIMESTAMP].is_unique
    assert str(out[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert "merged 1 rows" in caplog.text


def test_mean_merge_ignores_nan_and_keeps_anomaly_flag():
    frame = _frame(DUPLICATED, [1.0, np.nan, 4.0, 5.0], **{IS_ANOMALY: [False, True, False, False]})
    out = validate_frame(frame, duplicates="mean")
    assert out[VALUE].tolist() == [1.0, 4.0, 5.0]
    assert out[IS_ANOMALY].tolist() == [False, True, False]


def test_unknown_duplicate_policy_is_refused():
    with pytest.raises(ValueError, match="duplicates must be one of"):
        validate_frame(_frame(DUPLICATED, [1.0, 2.0, 4.0, 5.0]), duplicates="median")


# -- output -------------------------------------------------------------------------------
def test_output_is_sorted_with_normalised_dtypes():
    frame = pd.DataFrame(
        {
            TIMESTAMP: ["2026-01-05T00:00Z", "2026-01-05T00:00Z", "2026-01-05T00:01Z"],
            SERVICE: ["web", "api", "web"],
            METRIC: ["cpu", "cpu", "cpu"],
            VALUE: [1, 2, 3],
            IS_ANOMALY: [None, True, False],
        },
        index=[7, 8, 9],
    )
    out = validate_frame(frame)
    assert str(out[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert out[VALUE].dtype == np.float64
    assert out[IS_ANOMALY].dtype == bool
    assert list(out.index) == [0, 1, 2]
    assert list(zip(out[SERVICE], out[VALUE], strict=True)) == [
        ("api", 2.0),
        ("web", 1.0),
        ("web", 3.0),
    ]
    assert out[IS_ANOMALY].tolist() == [True, False, False]
    assert all(isinstance(s, str) for s in out[SERVICE])


def test_input_frame_is_not_modified():
    frame = _frame(UTC_STAMPS, ["1", "2", "3", "4"])
    before = frame.copy()
    validate_frame(frame)
    pd.testing.assert_frame_equal(frame, before)
