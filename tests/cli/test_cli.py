"""The ``aiops`` command line, driven through ``main()`` on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli import main
from features.store import list_series, read_dataset
from training.replay import score_series


def write_csv(path: Path, n: int = 600, *, duplicate_at: int | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2014-02-14 14:30", periods=n, freq="5min")
    values = 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.3, n)
    values[n - 50] += 15
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values})
    if duplicate_at is not None:
        frame = pd.concat([frame.iloc[: duplicate_at + 1], frame.iloc[duplicate_at:]])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def test_synth_writes_a_partitioned_labelled_fleet(tmp_path, capsys):
    out = tmp_path / "fleet"
    assert main(["data", "synth", "--out", str(out), "--services", "2", "--days", "3",
                 "--step", "5m", "--seed", "3"]) == 0
    assert "labelled incidents" in capsys.readouterr().out
    assert len(list_series(out)) == 12
    frame = read_dataset(out)
    assert frame["is_anomaly"].any()
    assert (frame["timestamp"].diff().dropna() >= pd.Timedelta(0)).any()


def test_import_csv_with_windows_labels_rows(tmp_path, capsys):
    csv = write_csv(tmp_path / "realStuff" / "cpu_a.csv")
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps(
        {"realStuff/cpu_a.csv": [["2014-02-15 12:00:00.000000", "2014-02-15 13:00:00.000000"]]}))
    out = tmp_path / "ds"
    assert main(["data", "import-csv", str(csv), "--out", str(out), "--windows", str(windows)]) == 0
    frame = read_dataset(out)
    assert list_series(out) == [("realStuff", "cpu_a")]
    assert len(frame) == 600
    assert frame["is_anomaly"].sum() == 13  # 12:00 to 13:00 inclusive at 5-minute steps


def test_import_csv_refuses_duplicates_by_default_and_names_the_row(tmp_path, capsys):
    csv = write_csv(tmp_path / "f" / "dup.csv", duplicate_at=100)
    assert main(["data", "import-csv", str(csv), "--out", str(tmp_path / "ds")]) == 1
    error = capsys.readouterr().err
    assert "dup.csv" in error and "row 101" in error and "appears twice" in error
    assert main(["data", "import-csv", str(csv), "--out", str(tmp_path / "ds"),
                 "--on-duplicate", "mean"]) == 0


def test_detect_writes_one_score_per_input_row(tmp_path):
    csv = write_csv(tmp_path / "f" / "series.csv", n=1200, duplicate_at=300)
    out = tmp_path / "scores.csv"
    assert main(["detect", str(csv), "--out", str(out), "--detector", "dynamic_threshold",
                 "--train-fraction", "0.3"]) == 0
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["timestamp", "value", "anomaly_score"]
    assert len(scores) == 1201
    assert scores["anomaly_score"].between(0, 1).all()
    # The repeated row carries the score of the first row at its timestamp.
    assert scores["anomaly_score"].iloc[300] == scores["anomaly_score"].iloc[301]
    # The planted jump (one row later in the file, after the repeat) is the top score.
    assert scores["anomaly_score"].iloc[360:].idxmax() == 1200 - 50 + 1


def test_detect_on_a_dataset_keeps_labels(fleet_dataset, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["detect", str(fleet_dataset), "--out", str(out),
                 "--detector", "dynamic_threshold"]) == 0
    scores = pd.read_csv(out)
    assert {"service", "metric", "label", "anomaly_score"} <= set(scores.columns)
    assert scores.groupby("label")["anomaly_score"].mean()[1] > scores.groupby("label")[
        "anomaly_score"].mean()[0]


def test_replay_is_causal():
    index = pd.date_range("2026-01-05", periods=800, freq="5min", tz="UTC")
    rng = np.random.default_rng(1)
    series = pd.Series(np.sin(np.arange(800) / 20) + rng.normal(0, 0.1, 800), index=index)
    before = score_series(series, train_fraction=0.25)
    changed = series.copy()
    changed.iloc[500:] += 100  # rewrite the future
    after = score_series(changed, train_fraction=0.25)
    pd.testing.assert_series_equal(before.iloc[:500], after.iloc[:500])
    assert (after.iloc[500:505] > 0.99).all()  # the jump itself is found at once


def test_missing_input_and_bad_fraction_are_clear_errors(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.csv")]) == 1
    assert "nope.csv does not exist" in capsys.readouterr().err
    csv = write_csv(tmp_path / "f" / "s.csv")
    assert main(["detect", str(csv), "--out", str(tmp_path / "o.csv"),
                 "--train-fraction", "1.5"]) == 1
    assert "train_fraction=1.5" in capsys.readouterr().err


def test_non_numeric_value_names_file_and_row(tmp_path, capsys):
    csv = tmp_path / "f" / "bad.csv"
    csv.parent.mkdir()
    csv.write_text("timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,oops\n")
    assert main(["data", "import-csv", str(csv), "--out", str(tmp_path / "ds")]) == 1
    error = capsys.readouterr().err
    assert "bad.csv" in error and "'value'" in error and "row 1" in error and "oops" in error


def test_sample_request_body_is_a_valid_score_request(fleet_dataset, tmp_path):
    from serving.schemas import ScoreRequest

    out = tmp_path / "req.json"
    assert main(["data", "sample-request", "--data", str(fleet_dataset), "--out", str(out),
                 "--spike"]) == 0
    request = ScoreRequest.model_validate_json(out.read_text())
    assert len(request.series[0].values) == 360


@pytest.mark.parametrize("argv", [["train"], ["data"], ["bogus"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_forecast_writes_the_horizon_after_until(tmp_path, capsys):
    csv = write_csv(tmp_path / "load.csv")
    out = tmp_path / "forecast.csv"
    stamps = pd.read_csv(csv)["timestamp"]
    until = stamps.iloc[399]
    assert main(["forecast", str(csv), "--horizon", "24", "--out", str(out),
                 "--until", until]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["timestamp", "yhat", "q10", "q50", "q90"]
    assert len(table) == 24
    assert pd.Timestamp(table["timestamp"].iloc[0]) > pd.Timestamp(until, tz="UTC")
    assert ((table["q10"] <= table["q50"]) & (table["q50"] <= table["q90"])).all()
    assert "load.csv: " in capsys.readouterr().out  # the chosen model and why


def test_forecast_on_a_dataset_names_each_series(fleet_dataset, tmp_path):
    out = tmp_path / "forecast.csv"
    assert main(["forecast", str(fleet_dataset), "--horizon", "5", "--out", str(out),
                 "--model", "seasonal_naive"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:2]) == ["service", "metric"]
    assert (table.groupby(["service", "metric"]).size() == 5).all()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--horizon", "0"], "horizon=0"),
        (["--horizon", "5", "--model", "prophet"], "unknown model 'prophet'"),
        (["--horizon", "5", "--until", "1999-01-01"], "no history at or before --until"),
        (["--horizon", "5", "--until", "soon"], "--until 'soon' is not a timestamp"),
    ],
)
def test_forecast_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    csv = write_csv(tmp_path / "load.csv")
    assert main(["forecast", str(csv), "--out", str(tmp_path / "o.csv"), *extra]) == 1
    assert message in capsys.readouterr().err



def test_retrain_needs_no_nightly(fleet_dataset, mlflow_store, tmp_path, monkeypatch, capsys):
    """``retrain`` has no other mode: ``--nightly``, once required, is a no-op kept for the cron
    jobs and manifests that pass it (tests/training/test_lifecycle.py runs it with the flag).
    Without it the nightly job runs, here refusing a day whose window holds no data."""
    monkeypatch.setenv("AIOPS_LOCK_DIR", str(tmp_path))
    code = main(["retrain", "--data", str(fleet_dataset), "--days", "1", "--day", "2020-01-01",
                 "--quiet"])
    assert code == 1
    assert "holds no rows between 2019-12-31" in capsys.readouterr().err


def test_the_forecasters_default_is_the_models_packages():
    from cli.main import build_parser
    from models.backtest import DEFAULT_FORECASTERS

    for command in ("train", "retrain"):
        args = build_parser().parse_args([command, "--data", "unused"])
        assert tuple(args.forecasters.split(",")) == DEFAULT_FORECASTERS


def _detect(csv: Path, out: Path, *extra: str) -> pd.DataFrame:
    assert main(["detect", str(csv), "--out", str(out), "--detector", "dynamic_threshold",
                 "--train-fraction", "0.3", *extra]) == 0
    return pd.read_csv(out)


def test_a_clock_stepping_back_an_hour_is_taken_and_changes_no_score(tmp_path, capsys):
    clean = write_csv(tmp_path / "f" / "clean.csv", n=1200)
    rows = pd.read_csv(clean, dtype=str)
    # At row 700 the clock steps back one hour: 12 timestamps repeat after later ones.
    stepped = pd.concat([rows.iloc[:700], rows.iloc[688:700].assign(value="0"), rows.iloc[700:]])
    csv = tmp_path / "f" / "stepped.csv"
    stepped.to_csv(csv, index=False)
    expected = _detect(clean, tmp_path / "clean_scores.csv")
    capsys.readouterr()
    scores = _detect(csv, tmp_path / "scores.csv")
    assert "12 rows repeating an earlier timestamp carry its score" in capsys.readouterr().out
    assert len(scores) == 1212 and scores["timestamp"].tolist() == stepped["timestamp"].tolist()
    kept = scores.drop(index=range(700, 712)).reset_index(drop=True)
    pd.testing.assert_series_equal(kept["anomaly_score"], expected["anomaly_score"])
    # The repeated hour's rows (values 0 here) carry the scores of the first pass.
    np.testing.assert_array_equal(scores["anomaly_score"].iloc[700:712],
                                  expected["anomaly_score"].iloc[688:700])


def test_a_row_that_comes_late_is_not_scored_and_changes_no_score(tmp_path, capsys):
    clean = write_csv(tmp_path / "f" / "clean.csv", n=1000)
    rows = pd.read_csv(clean, dtype=str)
    # Row 600 arrives after row 603: the other rows are scored as if it never came.
    late = pd.concat([rows.iloc[:600], rows.iloc[601:604], rows.iloc[600:601], rows.iloc[604:]])
    csv = tmp_path / "f" / "late.csv"
    late.to_csv(csv, index=False)
    without = rows.drop(index=600)
    (tmp_path / "g").mkdir()
    without.to_csv(tmp_path / "g" / "clean.csv", index=False)
    expected = _detect(tmp_path / "g" / "clean.csv", tmp_path / "without.csv")
    capsys.readouterr()
    scores = _detect(csv, tmp_path / "scores.csv")
    assert "1 late rows (earlier than a row before them) not scored" in capsys.readouterr().out
    assert len(scores) == 1000 and np.isnan(scores["anomaly_score"].iloc[603])
    pd.testing.assert_series_equal(scores["anomaly_score"].drop(index=603).reset_index(drop=True),
                                   expected["anomaly_score"])


def test_a_bad_value_after_a_late_row_is_named_by_its_row_in_the_file(tmp_path, capsys):
    rows = pd.read_csv(write_csv(tmp_path / "f" / "s.csv", n=400), dtype=str)
    rows = pd.concat([rows.iloc[:100], rows.iloc[101:102], rows.iloc[100:101], rows.iloc[102:]])
    rows.iloc[300, 1] = "oops"
    rows.to_csv(tmp_path / "f" / "s.csv", index=False)
    assert main(["detect", str(tmp_path / "f" / "s.csv"), "--out", str(tmp_path / "o.csv")]) == 1
    error = capsys.readouterr().err
    assert "s.csv" in error and "row 300" in error and "oops" in error


def test_pages_mark_where_the_default_policy_pages_once_per_incident(tmp_path, capsys):
    from models.alarms import AlarmPolicy

    csv = write_csv(tmp_path / "f" / "series.csv", n=1200)
    scores = _detect(csv, tmp_path / "scores.csv", "--pages")
    assert list(scores.columns) == ["timestamp", "value", "anomaly_score", "page"]
    stamps = pd.DatetimeIndex(pd.to_datetime(scores["timestamp"], utc=True)).as_unit("ns")
    policy = AlarmPolicy().at_step(300.0)  # the file's step: 0.9995
    expected = policy.pages(stamps.asi8, scores["anomaly_score"].to_numpy())
    np.testing.assert_array_equal(np.flatnonzero(scores["page"]), expected)
    # The planted jump (+15 on a noise of 0.3) pages, at its own row.
    assert 1200 - 50 in np.flatnonzero(scores["page"])
    assert f"{len(expected)} pages at threshold 0.9995" in capsys.readouterr().out

    # Another policy, from a file as the service reads it.
    loose = tmp_path / "policy.json"
    loose.write_text(json.dumps({"threshold": 0.99, "min_points": 1, "merge_gap_s": 300}))
    scores = _detect(csv, tmp_path / "loose.csv", "--pages", "--alarm-policy", str(loose))
    assert scores["page"].sum() > len(expected)
    # Without --pages the policy still governs the refits; a bad file is named.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learn_incident_after_s": -1}))
    assert main(["detect", str(csv), "--out", str(tmp_path / "o.csv"),
                 "--alarm-policy", str(bad)]) == 1
    assert "bad.json" in capsys.readouterr().err


def _stream(kind: str, seed: int = 0) -> pd.DataFrame:
    """Two days and a half of a 5-minute daily cycle, bent the way real streams are."""
    rng = np.random.default_rng(seed)
    n = 720
    index = pd.date_range("2014-02-14 14:30", periods=n, freq="5min")
    values = 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.3, n)
    if kind == "long gap":  # a day and an hour without data
        keep = np.r_[0:300, 600:n]
        index, values = index[keep], values[keep]
    elif kind == "changing step":  # 5-minute steps, then 1-minute ones
        fine = pd.date_range(index[399] + pd.Timedelta("1min"), periods=1600, freq="1min")
        phase = (400 * 5 + np.arange(1600)) * 2 * np.pi / 1440
        index = index[:400].append(fine)
        values = np.r_[values[:400], 10 + 3 * np.sin(phase) + rng.normal(0, 0.3, 1600)]
    elif kind == "jittered":  # scrapes up to 40 s early or late
        index = index + pd.to_timedelta(rng.integers(-40, 40, n), unit="s")
    elif kind == "odd start":  # starts mid-day, off the minute
        index = index + pd.Timedelta("3h07min12s")
    elif kind == "constant stretch":  # a stuck sensor for 10 hours
        values[400:520] = values[399]
    return pd.DataFrame({"timestamp": index.strftime("%Y-%m-%d %H:%M:%S"), "value": values})


@pytest.mark.parametrize("kind", ["long gap", "changing step", "jittered", "odd start",
                                  "constant stretch"])
def test_real_stream_shapes_are_scored_row_for_row_and_do_not_page_by_themselves(kind, tmp_path):
    """Each shape as documented in training/replay.py: every row scored, in order, at the
    default detectors and alarm policy; none of these shapes pages (a stuck value pages at
    most once, where it departs from the expected range)."""
    rows = _stream(kind)
    csv = tmp_path / "f" / "stream.csv"
    csv.parent.mkdir()
    rows.to_csv(csv, index=False)
    assert main(["detect", str(csv), "--out", str(tmp_path / "o.csv"), "--pages"]) == 0
    scores = pd.read_csv(tmp_path / "o.csv")
    assert scores["timestamp"].tolist() == rows["timestamp"].tolist()
    assert scores["anomaly_score"].notna().all() and scores["anomaly_score"].between(0, 1).all()
    assert scores["page"].sum() <= (1 if kind == "constant stretch" else 0), \
        scores.loc[scores["page"] == 1]
