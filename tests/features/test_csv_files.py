"""Tests of reading NAB-style ``timestamp,value`` CSV files and their label windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.csv_files import label_windows, load_windows, read_value_csv, windows_for
from features.schema import (
    INCIDENT,
    IS_ANOMALY,
    METRIC,
    SERVICE,
    TIMESTAMP,
    VALUE,
    DataValidationError,
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def cpu_csv(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "realAWSCloudwatch" / "ec2_cpu_utilization_24ae8d.csv",
        "timestamp,value\n"
        "2014-02-14 14:30:00,0.132\n"
        "2014-02-14 14:35:00,\n"
        "2014-02-14 14:40:00,0.134\n"
        "2014-02-14 14:45:00,0.2\n",
    )


def test_names_default_to_folder_and_stem(cpu_csv):
    out = read_value_csv(cpu_csv)
    assert set(out[SERVICE]) == {"realAWSCloudwatch"}
    assert set(out[METRIC]) == {"ec2_cpu_utilization_24ae8d"}


def test_names_can_be_given(cpu_csv):
    out = read_value_csv(cpu_csv, service="checkout", metric="cpu")
    assert set(out[SERVICE]) == {"checkout"} and set(out[METRIC]) == {"cpu"}


def test_naive_timestamps_are_utc_and_empty_values_nan(cpu_csv):
    out = read_value_csv(cpu_csv)
    assert str(out[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert out[TIMESTAMP].iloc[0] == pd.Timestamp("2014-02-14T14:30:00Z")
    assert out[VALUE].dtype == np.float64
    np.testing.assert_array_equal(out[VALUE].to_numpy(), [0.132, np.nan, 0.134, 0.2])


def test_offsets_are_converted_to_utc(tmp_path):
    path = _write(
        tmp_path / "s" / "m.csv",
        "timestamp,value\n2014-02-14 16:30:00+02:00,1\n2014-02-14T14:35:00Z,2\n2014-02-14 14:40:00,3\n",
    )
    out = read_value_csv(path)
    assert out[TIMESTAMP].tolist() == list(
        pd.to_datetime(["2014-02-14T14:30Z", "2014-02-14T14:35Z", "2014-02-14T14:40Z"])
    )


def test_non_numeric_value_names_file_column_and_data_row(tmp_path):
    path = _write(
        tmp_path / "s" / "m.csv",
        "timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00,2\n2014-02-14 14:40:00,abc\n",
    )
    with pytest.raises(DataValidationError) as error:
        read_value_csv(path)
    assert (error.value.file, error.value.column, error.value.row) == (str(path), VALUE, 2)
    assert str(path) in str(error.value) and "'abc'" in str(error.value)


def test_unparsable_timestamp_names_the_row(tmp_path):
    path = _write(tmp_path / "s" / "m.csv", "timestamp,value\n2014-02-14 14:30:00,1\nlater,2\n")
    with pytest.raises(DataValidationError) as error:
        read_value_csv(path)
    assert (error.value.column, error.value.row) == (TIMESTAMP, 1)


@pytest.mark.parametrize(
    ("header", "missing"), [("time,value", TIMESTAMP), ("timestamp,val", VALUE)]
)
def test_missing_header_column_is_named(tmp_path, header, missing):
    path = _write(tmp_path / "s" / "m.csv", f"{header}\n2014-02-14 14:30:00,1\n")
    with pytest.raises(DataValidationError) as error:
        read_value_csv(path)
    assert (error.value.file, error.value.column) == (str(path), missing)
    assert "header" in str(error.value)


def test_empty_file_is_a_validation_error(tmp_path):
    path = _write(tmp_path / "s" / "m.csv", "")
    with pytest.raises(DataValidationError) as error:
        read_value_csv(path)
    assert error.value.file == str(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_value_csv(tmp_path / "s" / "absent.csv")


DUPLICATED = (
    "timestamp,value\n"
    "2014-02-14 14:30:00,1\n"
    "2014-02-14 14:35:00,2\n"
    "2014-02-14 14:35:00,4\n"
    "2014-02-14 14:40:00,5\n"
)


def test_duplicates_refused_by_default(tmp_path):
    path = _write(tmp_path / "s" / "m.csv", DUPLICATED)
    with pytest.raises(DataValidationError) as error:
        read_value_csv(path)
    assert (error.value.file, error.value.column, error.value.row) == (str(path), TIMESTAMP, 2)


@pytest.mark.parametrize(("policy", "merged"), [("first", 2.0), ("last", 4.0), ("mean", 3.0)])
def test_duplicates_policy(tmp_path, policy, merged):
    path = _write(tmp_path / "s" / "m.csv", DUPLICATED)
    out = read_value_csv(path, duplicates=policy)
    assert out[VALUE].tolist() == [1.0, merged, 5.0]


def test_rows_out_of_order_name_the_row(tmp_path):
    path = _write(
        tmp_path / "s" / "m.csv",
        "timestamp,value\n2014-02-14 14:35:00,1\n2014-02-14 14:30:00,2\n",
    )
    with pytest.raises(DataValidationError) as error:
        read_value_csv(path)
    assert (error.value.column, error.value.row) == (TIMESTAMP, 1)


# -- label windows ------------------------------------------------------------------------
WINDOWS = {
    "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv": [
        ["2014-02-14 14:35:00.000000", "2014-02-14 14:40:00.000000"]
    ],
    "realKnownCause/nyc_taxi.csv": [
        ["2014-10-30 15:30:00.000000", "2014-11-03 22:30:00.000000"],
        ["2014-11-25 12:00:00+01:00", "2014-11-29 19:00:00+01:00"],
    ],
    "artificialNoAnomaly/flat.csv": [],
    "folderA/same.csv": [],
    "folderB/same.csv": [],
}


@pytest.fixture
def windows_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "combined_windows.json", json.dumps(WINDOWS))


def test_load_windows_parses_naive_as_utc_and_converts_offsets(windows_file):
    windows = load_windows(windows_file)
    assert set(windows) == set(WINDOWS)
    taxi = windows["realKnownCause/nyc_taxi.csv"]
    assert taxi[0] == (pd.Timestamp("2014-10-30T15:30Z"), pd.Timestamp("2014-11-03T22:30Z"))
    assert taxi[1] == (pd.Timestamp("2014-11-25T11:00Z"), pd.Timestamp("2014-11-29T18:00Z"))
    assert all(str(t.tz) == "UTC" for span in taxi for t in span)
    assert windows["artificialNoAnomaly/flat.csv"] == []


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps([["2014-01-01", "2014-01-02"]]),
        json.dumps({"a/b.csv": [["2014-01-01"]]}),
    ],
)
def test_load_windows_refuses_bad_files(tmp_path, text):
    path = _write(tmp_path / "windows.json", text)
    with pytest.raises(DataValidationError) as error:
        load_windows(path)
    assert error.value.file == str(path)


def test_windows_for_matches_folder_and_file(windows_file, tmp_path):
    windows = load_windows(windows_file)
    taxi = windows_for(tmp_path / "realKnownCause" / "nyc_taxi.csv", windows)
    assert taxi == windows["realKnownCause/nyc_taxi.csv"]
    # Another folder but a unique file name still matches.
    assert windows_for(tmp_path / "elsewhere" / "nyc_taxi.csv", windows) is taxi
    # Ambiguous or unknown names match nothing.
    assert windows_for(tmp_path / "elsewhere" / "same.csv", windows) is None
    assert windows_for(tmp_path / "elsewhere" / "unknown.csv", windows) is None


def test_label_windows_marks_rows_inside_inclusive_spans(cpu_csv, windows_file):
    frame = read_value_csv(cpu_csv)
    spans = windows_for(cpu_csv, load_windows(windows_file))
    out = label_windows(frame, spans)
    assert out[IS_ANOMALY].tolist() == [False, True, True, False]
    assert out[INCIDENT].tolist() == ["", "window", "window", ""]
    assert IS_ANOMALY not in frame.columns  # the input is left alone


def test_label_windows_without_spans_marks_nothing(cpu_csv):
    out = label_windows(read_value_csv(cpu_csv), [])
    assert not out[IS_ANOMALY].any()
    assert out[IS_ANOMALY].dtype == bool
