"""``aiops data import-prometheus`` and ``aiops retrain --nightly --prometheus`` on a real Prometheus."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cli import main
from features.store import list_series, read_dataset
from training.tracking import DEFAULT_EXPERIMENT

pytestmark = pytest.mark.integration


def rfc3339(unix_s: int) -> str:
    return pd.Timestamp(unix_s, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_import_prints_a_report_and_resumes(prometheus_history, tmp_path, capsys):
    h = prometheus_history
    out = tmp_path / "ds"
    args = ["data", "import-prometheus", "--url", h.url, "--query", "node_cpu_ratio",
            "--query", "latency=http_latency_seconds", "--start", str(h.start), "--step", "1m",
            "--out", str(out)]
    assert main([*args, "--end", rfc3339(h.start + 6 * 3600)]) == 0
    printed = capsys.readouterr().out
    assert "checkout/node_cpu_ratio: 361 rows written, new series" in printed
    assert "payments/latency: 361 rows written" in printed and "1 NaN as gaps" in printed
    assert "imported 1083 rows of 3 series" in printed and "2 requests" in printed
    assert list_series(out) == [("checkout", "node_cpu_ratio"), ("payments", "latency"),
                                ("search", "node_cpu_ratio")]

    assert main([*args, "--end", rfc3339(h.start + 7 * 3600)]) == 0
    printed = capsys.readouterr().out
    assert ("search/node_cpu_ratio: 60 rows written, 361 skipped (not after the last stored "
            f"point {rfc3339(h.start + 6 * 3600)})") in printed
    assert len(read_dataset(out)) == 3 * (7 * 60 + 1)


def test_labels_config_sets_the_rule_and_names_queries(prometheus_history, tmp_path, capsys):
    h = prometheus_history
    config = tmp_path / "labels.yaml"
    config.write_text("service_labels: [job]\nqueries:\n  p99: http_latency_seconds\n")
    out = tmp_path / "ds"
    assert main(["data", "import-prometheus", "--url", h.url, "--labels-config", str(config),
                 "--start", rfc3339(h.start), "--end", rfc3339(h.start + 600), "--step", "10s",
                 "--out", str(out)]) == 0
    assert list_series(out) == [("payments", "p99")]

    # node_cpu_ratio has no job label: the error names the query and the series' labels.
    assert main(["data", "import-prometheus", "--url", h.url, "--labels-config", str(config),
                 "--query", "node_cpu_ratio", "--start", rfc3339(h.start),
                 "--end", rfc3339(h.start + 600), "--step", "10s", "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("aiops data: error: query 'node_cpu_ratio': cannot tell the service "
                            "(none of the labels job is set)")
    assert '{__name__="node_cpu_ratio", service="checkout"}' in error and "\n" not in error

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"service_label": "job"}))
    assert main(["data", "import-prometheus", "--url", h.url, "--labels-config", str(bad),
                 "--query", "up", "--start", "0", "--step", "1m", "--out", str(out)]) == 1
    assert "unknown key(s) ['service_label']" in capsys.readouterr().err


def test_errors_are_one_line_and_leave_the_store_alone(prometheus_history, tmp_path, capsys):
    h = prometheus_history
    out = tmp_path / "ds"
    common = ["--start", rfc3339(h.start), "--end", rfc3339(h.start + 3600), "--step", "1m",
              "--out", str(out)]
    assert main(["data", "import-prometheus", "--url", h.url, "--query", "node_cpu_ratio",
                 *common]) == 0
    before = files(out)
    capsys.readouterr()

    assert main(["data", "import-prometheus", "--url", h.url, "--query", "node_cpu_ratio",
                 "--query", "sum(rate(node_cpu_ratio[5m]) by (service)", *common]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert "HTTP 400, bad_data" in error and "parse error" in error
    assert "nothing was written" in error and files(out) == before

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["data", "import-prometheus", "--url", f"http://127.0.0.1:{port}", "--query",
                 "up", "--timeout", "2", *common]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "cannot connect" in error and files(out) == before


@pytest.mark.parametrize("start", [["--start", "-2d"], ["--start=-2d"], ["--start", "now-2d"],
                                   ["--start=now-2d"]])
def test_start_and_end_may_be_relative_to_now(prometheus_history, tmp_path, capsys, start):
    h = prometheus_history
    out = tmp_path / "ds"
    before = pd.Timestamp.now(tz="UTC")
    assert main(["data", "import-prometheus", "--url", h.url, "--query", "node_cpu_ratio",
                 *start, "--end", "now", "--step", "10m", "--out", str(out)]) == 0
    after = pd.Timestamp.now(tz="UTC")
    assert "imported" in capsys.readouterr().out
    stamps = read_dataset(out)["timestamp"]
    # Two days back from now, moved up onto the 10-minute grid; the history ends before now.
    assert (before - pd.Timedelta("2D")).ceil("10min") <= stamps.min() \
        <= (after - pd.Timedelta("2D")).ceil("10min")
    assert stamps.max() <= pd.Timestamp(h.end, unit="s", tz="UTC") + pd.Timedelta("5min")


def test_a_step_finer_than_the_samples_is_printed_as_a_warning(prometheus_history, tmp_path,
                                                                capsys):
    h = prometheus_history  # 10 s samples
    assert main(["data", "import-prometheus", "--url", h.url, "--query", "node_cpu_ratio",
                 "--start", str(h.start), "--end", str(h.start + 600), "--step", "2500ms",
                 "--out", str(tmp_path / "ds")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert ("warning: search/node_cpu_ratio: each value repeats about 4 times, so the data looks "
            "sampled every 10s, finer than the step 2.5s: import with --step 10s") in printed
    assert len(read_dataset(tmp_path / "ds")) == 2 * (600 * 4 // 10 + 1)  # imported all the same


def test_a_relative_end_before_a_relative_start_is_named(prometheus_history, tmp_path, capsys):
    assert main(["data", "import-prometheus", "--url", prometheus_history.url, "--query", "up",
                 "--start", "-1h", "--end", "-2h", "--step", "1m",
                 "--out", str(tmp_path / "ds")]) == 1
    assert "is after end" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("change, message", [
    (["--step", "ten"], "step 'ten' is not a duration"),
    (["--start", "2026-11-27 10:00"], "has no timezone"),
    (["--end", "tomorrow"], "--end 'tomorrow' is neither RFC 3339"),
    (["--start", "-1x"], "--start '-1x' is neither RFC 3339 (2026-11-27T12:00:00Z), Unix seconds "
                         "nor a time relative to now (now, now-1h, -30m)"),
    (["--timeout", "0"], "'0' is not a positive number of seconds"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, change, message):
    args = {"--url": "http://127.0.0.1:9", "--query": "up", "--start": "0", "--step": "1m",
            "--out": str(tmp_path / "ds")}
    args.update(dict(zip(change[::2], change[1::2], strict=True)))
    with pytest.raises(SystemExit) as exited:
        main(["data", "import-prometheus", *[x for pair in args.items() for x in pair]])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.usefixtures("ray_session")
def test_nightly_imports_its_window_then_trains(prometheus_history, mlflow_store, tmp_path,
                                                monkeypatch, capsys):
    h = prometheus_history
    monkeypatch.setenv("AIOPS_LOCK_DIR", str(tmp_path))
    # The window [day - 1 day, day) lies inside the 48 hours of history.
    day = pd.Timestamp(h.end, unit="s", tz="UTC").date()
    out = tmp_path / "ds"
    args = ["retrain", "--nightly", "--prometheus", h.url, "--query", "node_cpu_ratio",
            "--step", "5m", "--data", str(out), "--day", day.isoformat(), "--days", "1",
            "--detectors", "static_threshold", "--forecast-horizon", "0",
            "--model-name", "nightly-prometheus-test", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "checkout/node_cpu_ratio: 289 rows written, new series" in printed
    assert f"nightly {day}: trained on" in printed and "version 1" in printed
    frame = read_dataset(out)
    midnight = pd.Timestamp(day, tz="UTC")
    assert frame["timestamp"].min() == midnight - pd.Timedelta(days=1)
    assert frame["timestamp"].max() == midnight
    experiment = MlflowClient().get_experiment_by_name(DEFAULT_EXPERIMENT)
    run = MlflowClient().search_runs([experiment.experiment_id])[0]
    assert int(run.data.params["n_rows"]) == 2 * 288  # the window excludes midnight itself

    # The day is done: a second run neither imports nor trains.
    before = sorted(p.name for p in out.rglob("*.parquet"))
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "already finished" in printed and "imported" not in printed
    assert sorted(p.name for p in out.rglob("*.parquet")) == before
