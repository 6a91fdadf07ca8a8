"""Tests of the one duration grammar and the one timestamp grammar (features.timeparse).

The assertions moved here from test_series.py (``parse_step``, now
``parse_duration``) and test_prometheus.py (``parse_time``, now
``parse_timestamp``) keep their inputs and expectations.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from features.schema import DataValidationError
from features.series import duration_text
from features.timeparse import parse_duration, parse_seconds, parse_timestamp, parse_timestamps


# -- durations ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m", pd.Timedelta(minutes=1)),  # minutes, as in Prometheus — not months
        ("5m", pd.Timedelta(minutes=5)),
        ("1.5m", pd.Timedelta(seconds=90)),
        (" 15m ", pd.Timedelta(minutes=15)),
        ("10s", pd.Timedelta(seconds=10)),
        ("1min", pd.Timedelta(minutes=1)),
        ("1h", pd.Timedelta(hours=1)),
        ("1D", pd.Timedelta(days=1)),
        (pd.Timedelta("30s"), pd.Timedelta(seconds=30)),
        # Prometheus' chained form, and its units
        ("1m30s", pd.Timedelta(seconds=90)),
        ("1h30m", pd.Timedelta(minutes=90)),
        ("250ms", pd.Timedelta(milliseconds=250)),
        ("2d", pd.Timedelta(days=2)),
        ("1w", pd.Timedelta(days=7)),
        ("1y", pd.Timedelta(days=365)),
        # numbers are seconds
        ("15", pd.Timedelta(seconds=15)),
        ("2.5", pd.Timedelta(seconds=2.5)),
        ("1e3", pd.Timedelta(seconds=1000)),
        (90, pd.Timedelta(seconds=90)),
        (0.25, pd.Timedelta(milliseconds=250)),
        # pandas' spellings, and the older aliases with the meaning they had
        ("5 min", pd.Timedelta(minutes=5)),
        ("1 hour", pd.Timedelta(hours=1)),
        ("01:30:00", pd.Timedelta(minutes=90)),
        ("P1DT2H", pd.Timedelta(hours=26)),
        ("1T", pd.Timedelta(minutes=1)),
        ("1H", pd.Timedelta(hours=1)),
        ("1S", pd.Timedelta(seconds=1)),
        ("1d", pd.Timedelta(days=1)),
        ("1W", pd.Timedelta(days=7)),
        ("12h", pd.Timedelta(hours=12)),
        (dt.timedelta(minutes=2), pd.Timedelta(minutes=2)),
        (np.timedelta64(3, "s"), pd.Timedelta(seconds=3)),
    ],
)
def test_durations_parse_as_documented(text, expected):
    assert parse_duration(text) == expected
    assert parse_seconds(text) == expected.total_seconds()


@pytest.mark.parametrize("text", ["abc", "1M", "m", "ten seconds", "", "nan", "NaT", "inf",
                                  "1m30", "1h-5m", "1Y", "1.5y", "min"])
def test_non_durations_are_refused_naming_the_argument_and_the_forms(text):
    with pytest.raises(ValueError, match="not a duration") as raised:
        parse_duration(text, name="--step")
    assert str(raised.value).startswith(f"--step {text!r} ")
    assert "1m30s" in str(raised.value)  # the accepted forms are listed


@pytest.mark.parametrize("step", ["0s", "-1m", "-10s", "0", "-1", 0, -2.5,
                                  pd.Timedelta(0), pd.Timedelta("-1h")])
def test_non_positive_durations_are_refused(step):
    with pytest.raises(ValueError, match="positive"):
        parse_duration(step)


@pytest.mark.parametrize("value", [True, None, [60], b"1m"])
def test_a_duration_of_the_wrong_type_is_a_type_error(value):
    with pytest.raises(TypeError, match="step"):
        parse_duration(value, name="step")


def test_a_number_in_seconds_comes_back_exactly():
    assert parse_seconds("0.1") == 0.1
    assert parse_seconds(1 / 3) == 1 / 3


@pytest.mark.parametrize("seconds", [0.25, 1, 15, 60, 90, 3600, 5400, 86_400, 90_061.5])
def test_duration_text_reads_back_to_the_same_value(seconds):
    assert parse_seconds(duration_text(seconds)) == seconds


# -- timestamps -----------------------------------------------------------------------------
NOW = pd.Timestamp("2026-11-27T12:00:00Z")


def test_absolute_times_parse_as_documented():
    assert parse_timestamp("2026-11-27T12:00:00+02:00") == pd.Timestamp("2026-11-27T10:00Z")
    assert parse_timestamp("2026-11-27T10:00:00Z") == pd.Timestamp("2026-11-27T10:00Z")
    assert parse_timestamp("2026-11-27 10:00 UTC") == pd.Timestamp("2026-11-27T10:00Z")
    assert parse_timestamp("1795000000") == pd.Timestamp(1795000000, unit="s", tz="UTC")
    assert parse_timestamp(1795000000.5) == pd.Timestamp(1795000000.5, unit="s", tz="UTC")
    assert parse_timestamp(pd.Timestamp("2026-11-27T12:00+01:00")) == pd.Timestamp("2026-11-27T11:00Z")
    aware = dt.datetime(2026, 11, 27, 12, tzinfo=dt.UTC)
    assert parse_timestamp(aware) == pd.Timestamp("2026-11-27T12:00Z")
    assert str(parse_timestamp("2026-11-27T12:00:00+02:00").tz) == "UTC"


def test_a_time_without_a_zone_follows_the_callers_rule():
    with pytest.raises(ValueError, match="no timezone"):
        parse_timestamp("2026-11-27 12:00", name="--start")
    with pytest.raises(ValueError, match=r"--start .* has no timezone"):
        parse_timestamp(pd.Timestamp("2026-11-27 12:00"), name="--start")
    assert parse_timestamp("2026-11-27 12:00", naive="utc") == pd.Timestamp("2026-11-27T12:00Z")
    assert parse_timestamp("2026-11-27", naive="utc") == pd.Timestamp("2026-11-27T00:00Z")


def test_a_non_time_names_the_argument_and_the_forms():
    with pytest.raises(ValueError, match="--end 'soon' is neither RFC 3339"):
        parse_timestamp("soon", name="--end")
    for bad in ("nan", "inf", float("nan")):
        with pytest.raises(ValueError, match="not a time"):
            parse_timestamp(bad, name="--end")
    for bad in (True, None, [1]):
        with pytest.raises(TypeError, match="--end"):
            parse_timestamp(bad, name="--end")


def test_times_relative_to_now_read_as_prometheus_tools_write_them():
    now = NOW
    assert parse_timestamp("now", now=now) == now
    assert parse_timestamp(" NOW ", now=now) == now
    for text, offset in [("-1h", "-1h"), ("now-1h", "-1h"), ("now-1h30m", "-90min"),
                         ("-2d", "-2D"), ("now+15m", "15min"), ("now - 5m", "-5min")]:
        assert parse_timestamp(text, now=now) == now + pd.Timedelta(offset), text
    assert parse_timestamp("-3600", now=now) == pd.Timestamp(-3600, unit="s", tz="UTC")  # Unix s
    for bad in ("-1x", "now-", "now-1h-", "now*2", "-h"):
        with pytest.raises(ValueError, match=rf"--start '{re.escape(bad)}' is neither RFC 3339 "
                                             r".* nor a time relative to now"):
            parse_timestamp(bad, name="--start", now=now)


def test_now_defaults_to_the_current_time():
    before = pd.Timestamp.now(tz="UTC")
    assert before - pd.Timedelta(hours=1) <= parse_timestamp("-1h") <= pd.Timestamp.now(tz="UTC")


def test_a_column_reads_the_absolute_forms_of_one_value():
    texts = ["2026-11-27T12:00:00+02:00", "2026-11-27T10:00:00Z", "2026-11-27T10:00Z"]
    column = parse_timestamps(pd.Series(texts))
    assert list(column) == [parse_timestamp(t) for t in texts]
    assert str(column.dtype) == "datetime64[ns, UTC]"
    naive = pd.Series(["2026-11-27 12:00", "2026-11-27"])
    assert list(parse_timestamps(naive, naive="utc")) == [
        parse_timestamp(t, naive="utc") for t in naive]
    with pytest.raises(DataValidationError, match="row 0: timestamp has no timezone"):
        parse_timestamps(naive)
