"""Tests of the Parquet store on real files: round trip, partition pruning, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.schema import (
    INCIDENT,
    IS_ANOMALY,
    METRIC,
    SERVICE,
    TIMESTAMP,
    VALUE,
    DataValidationError,
)
from features.store import iter_files, list_series, read_dataset, write_dataset

#: Two services × two metrics × two days (the range straddles midnight UTC).
STAMPS = pd.date_range("2026-01-05T22:00Z", periods=8, freq="30min")
SERIES = [("api", "cpu"), ("api", "latency"), ("web", "cpu"), ("web", "latency")]


def _fleet() -> pd.DataFrame:
    frames = []
    for i, (service, metric) in enumerate(SERIES):
        values = np.arange(len(STAMPS), dtype="float64") + 100 * i
        values[3] = np.nan
        frames.append(
            pd.DataFrame(
                {
                    TIMESTAMP: STAMPS,
                    SERVICE: service,
                    METRIC: metric,
                    VALUE: values,
                    IS_ANOMALY: [k == 5 for k in range(len(STAMPS))],
                    INCIDENT: ["spike" if k == 5 else "" for k in range(len(STAMPS))],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def fleet() -> pd.DataFrame:
    return _fleet()


@pytest.fixture
def root(tmp_path: Path, fleet: pd.DataFrame) -> Path:
    path = tmp_path / "metrics"
    assert write_dataset(fleet, path) == len(fleet)
    return path


def _relative(paths, root: Path) -> list[str]:
    return sorted(str(Path(p).parent.relative_to(root)) for p in paths)


def test_round_trip_keeps_values_nan_labels_and_dtypes(root, fleet):
    out = read_dataset(root)
    expected = fleet.sort_values([SERVICE, METRIC, TIMESTAMP], kind="stable").reset_index(drop=True)
    assert len(out) == len(expected)
    assert str(out[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert out[VALUE].dtype == np.float64
    assert out[IS_ANOMALY].dtype == bool
    for column in (TIMESTAMP, SERVICE, METRIC, IS_ANOMALY, INCIDENT):
        assert out[column].tolist() == expected[column].tolist(), column
    np.testing.assert_array_equal(out[VALUE].to_numpy(), expected[VALUE].to_numpy())
    assert out[VALUE].isna().sum() == len(SERIES)  # gaps stay NaN, not 0


def test_files_are_hive_partitioned_by_service_metric_date(root):
    files = list(root.rglob("*.parquet"))
    folders = _relative(files, root)
    expected = sorted(
        f"service={s}/metric={m}/date={d}" for s, m in SERIES for d in ("2026-01-05", "2026-01-06")
    )
    assert folders == expected
    # Partition keys live in the directory names, not inside the files.
    names = pq.read_schema(files[0]).names
    assert SERVICE not in names and METRIC not in names and "date" not in names
    assert TIMESTAMP in names and VALUE in names


def test_a_day_lands_in_its_utc_date_partition(root):
    day = pq.read_table(root / "service=api/metric=cpu/date=2026-01-05").to_pandas()
    assert day[TIMESTAMP].dt.date.astype(str).unique().tolist() == ["2026-01-05"]
    assert len(day) == 4  # 22:00, 22:30, 23:00, 23:30


def test_query_reads_only_matching_partitions(root):
    files = list(
        iter_files(
            root, service="api", metric="cpu", start="2026-01-06T00:00Z", end="2026-01-06T02:00Z"
        )
    )
    assert _relative(files, root) == ["service=api/metric=cpu/date=2026-01-06"]
    assert len(list(iter_files(root, service="web"))) == 4
    assert len(list(iter_files(root))) == 8


def test_query_filters_rows_start_inclusive_end_exclusive(root):
    out = read_dataset(
        root, service="api", metric="cpu", start="2026-01-05T23:30Z", end="2026-01-06T00:30Z"
    )
    assert out[TIMESTAMP].tolist() == list(
        pd.to_datetime(["2026-01-05T23:30Z", "2026-01-06T00:00Z"])
    )
    np.testing.assert_array_equal(out[VALUE].to_numpy(), [np.nan, 4.0])
    assert set(out[SERVICE]) == {"api"} and set(out[METRIC]) == {"cpu"}


def test_query_accepts_other_offsets_for_its_bounds(root):
    # 01:00+01:00 is midnight UTC: only the second day.
    out = read_dataset(root, service="web", metric="cpu", start="2026-01-06T01:00+01:00")
    assert out[TIMESTAMP].min() == pd.Timestamp("2026-01-06T00:00Z")
    assert len(out) == 4


def test_query_survives_a_corrupt_file_in_another_partition(root):
    # Corrupt every file except the one queried: the query must not even open them.
    keep = root / "service=web/metric=latency/date=2026-01-06"
    for path in root.rglob("*.parquet"):
        if path.parent != keep:
            path.write_bytes(b"not parquet at all")
    out = read_dataset(root, service="web", metric="latency", start="2026-01-06T00:00Z")
    assert len(out) == 4
    assert set(out[SERVICE]) == {"web"}


def test_query_survives_a_deleted_partition_elsewhere(root):
    for path in (root / "service=api").rglob("*.parquet"):
        path.unlink()
    out = read_dataset(root, service="web", metric="cpu")
    assert len(out) == len(STAMPS)


def test_corrupt_parquet_file_is_named(root):
    bad = next((root / "service=api/metric=cpu/date=2026-01-06").glob("*.parquet"))
    bad.write_bytes(b"PAR1 garbage")
    with pytest.raises(DataValidationError) as error:
        read_dataset(root, service="api")
    assert error.value.file == str(bad)
    assert str(bad) in str(error.value)


def _foreign_file(root: Path, table: pa.Table) -> Path:
    folder = root / "service=db/metric=cpu/date=2026-01-05"
    folder.mkdir(parents=True)
    path = folder / "foreign.parquet"
    pq.write_table(table, path)
    return path


def _stamps(n: int) -> pa.Array:
    return pa.array(STAMPS[:n].as_unit("ns"), pa.timestamp("ns", tz="UTC"))


def test_string_value_column_is_named(root):
    path = _foreign_file(root, pa.table({TIMESTAMP: _stamps(3), VALUE: ["1.0", "high", "3"]}))
    with pytest.raises(DataValidationError) as error:
        read_dataset(root, service="db")
    assert (error.value.file, error.value.column, error.value.row) == (str(path), VALUE, 1)
    assert str(path) in str(error.value)


def test_missing_value_column_is_named(root):
    path = _foreign_file(root, pa.table({TIMESTAMP: _stamps(3), "val": [1.0, 2.0, 3.0]}))
    with pytest.raises(DataValidationError) as error:
        read_dataset(root)
    assert (error.value.file, error.value.column) == (str(path), VALUE)


def test_naive_timestamps_in_a_file_are_refused(root):
    naive = pa.array(STAMPS[:2].tz_localize(None).as_unit("ns"), pa.timestamp("ns"))
    path = _foreign_file(root, pa.table({TIMESTAMP: naive, VALUE: [1.0, 2.0]}))
    with pytest.raises(DataValidationError) as error:
        read_dataset(root, service="db")
    assert (error.value.file, error.value.column) == (str(path), TIMESTAMP)


def test_replace_is_idempotent(root, fleet):
    before = read_dataset(root)
    n_files = len(list(root.rglob("*.parquet")))
    write_dataset(fleet, root, existing="replace")
    write_dataset(fleet, root, existing="replace")
    assert len(list(root.rglob("*.parquet"))) == n_files
    pd.testing.assert_frame_equal(read_dataset(root), before)


def test_replace_only_touches_the_partitions_written(root, fleet):
    one_day = fleet[(fleet[SERVICE] == "api") & (fleet[METRIC] == "cpu")].iloc[-2:].copy()
    one_day[VALUE] = [-1.0, -2.0]
    write_dataset(one_day, root, existing="replace")
    out = read_dataset(root)
    api_cpu = out[(out[SERVICE] == "api") & (out[METRIC] == "cpu")]
    # The 2026-01-06 partition now holds only the two rewritten rows; the 05th is intact.
    assert api_cpu[VALUE].tolist()[-2:] == [-1.0, -2.0]
    assert len(api_cpu) == 4 + 2
    assert len(out) == len(fleet) - 2


def test_append_of_the_same_rows_makes_reading_fail(root, fleet):
    write_dataset(fleet, root, existing="append")
    with pytest.raises(DataValidationError, match="twice") as error:
        read_dataset(root)
    assert error.value.column == TIMESTAMP


def test_append_of_new_days_adds_rows(root, fleet):
    later = fleet.copy()
    later[TIMESTAMP] = later[TIMESTAMP] + pd.Timedelta("2D")
    write_dataset(later, root, existing="append")
    assert len(read_dataset(root)) == 2 * len(fleet)


def test_unknown_existing_mode_is_refused(tmp_path, fleet):
    with pytest.raises(ValueError, match="existing"):
        write_dataset(fleet, tmp_path / "x", existing="merge")


def test_write_validates_its_input(tmp_path, fleet):
    bad = fleet.copy()
    bad[VALUE] = bad[VALUE].astype(object)
    bad.loc[6, VALUE] = "oops"
    with pytest.raises(DataValidationError) as error:
        write_dataset(bad, tmp_path / "x")
    assert (error.value.column, error.value.row) == (VALUE, 6)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bound", ["start", "end"])
def test_naive_query_bounds_are_refused(root, bound):
    with pytest.raises(ValueError, match=bound):
        read_dataset(root, **{bound: "2026-01-05 00:00"})
    with pytest.raises(ValueError, match=bound):
        list(iter_files(root, **{bound: pd.Timestamp("2026-01-05")}))


def test_query_with_no_match_is_an_empty_normalised_frame(root):
    out = read_dataset(root, service="nobody")
    assert out.empty
    assert str(out[TIMESTAMP].dtype) == "datetime64[ns, UTC]"
    assert out[VALUE].dtype == np.float64


def test_list_series(root):
    assert list_series(root) == SERIES


def test_missing_directory_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_dataset(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        list_series(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        list(iter_files(tmp_path / "absent"))
