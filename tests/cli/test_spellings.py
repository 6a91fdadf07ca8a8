"""Every command and config that takes a duration or a time accepts the same spellings.

Issue 14: ``aiops data synth --step 1m30s`` failed where ``aiops data
import-prometheus --step 1m30s`` worked. Each place that reads a step, a period
or a time is driven here with one table of spellings and must read each to the
same value (features.timeparse holds the grammar; these tests hold the places to it).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli.main import _attach_time_values, build_parser, main
from features.csv_files import load_windows
from features.schema import TIMESTAMP
from features.series import infer_step, to_series
from features.store import read_dataset
from features.synth import FleetConfig, generate_fleet
from serving.live import LiveConfig

#: One duration in every family of spellings: seconds, Prometheus', pandas'.
DURATIONS = [
    ("90", 90.0), ("90s", 90.0), ("1m30s", 90.0), (" 1m30s ", 90.0), ("1.5m", 90.0),
    ("1.5min", 90.0), ("00:01:30", 90.0), ("PT1M30S", 90.0), ("1 min 30 s", 90.0),
    ("300", 300.0), ("5m", 300.0), ("5min", 300.0), ("5T", 300.0), ("300000ms", 300.0),
]
#: Refused everywhere, each with a message naming the option or field.
NOT_DURATIONS = ["ten", "m", "1M", "1m30", "1h-5m", "-1m", "0", ""]

#: One instant in every spelling of a time with its zone.
INSTANT = pd.Timestamp("2026-11-27T12:00:00Z")
TIMES = ["2026-11-27T12:00:00Z", "2026-11-27T13:00:00+01:00", "2026-11-27T07:00:00-05:00",
         "2026-11-27 12:00:00 UTC", str(int(INSTANT.timestamp())),
         f"{INSTANT.timestamp():.1f}"]
NAIVE = "2026-11-27 12:00:00"


# -- the places that read a duration, each as a function of the text -> seconds ----------------
# Options are passed as --option=TEXT: argparse takes a word such as -1m for an option.
def _synth_step(text, tmp_path):
    out = tmp_path / "fleet"
    assert main(["data", "synth", "--out", str(out), "--services", "1", "--days", "2",
                 f"--step={text}"]) == 0
    frame = read_dataset(out, service="checkout", metric="cpu_utilization")
    return infer_step(to_series(frame).index).total_seconds()


def _import_prometheus(option):
    def read(text, tmp_path):
        args = build_parser().parse_args(
            ["data", "import-prometheus", "--url", "http://127.0.0.1:9", "--query", "up",
             "--start", "0", "--step", "1m", "--out", str(tmp_path), f"{option}={text}"])
        return getattr(args, option.lstrip("-"))
    return read


def _retrain(option):
    def read(text, tmp_path):
        args = build_parser().parse_args(["retrain", "--data", str(tmp_path), f"{option}={text}"])
        return getattr(args, option.lstrip("-"))
    return read


def _watch_interval(text, tmp_path):
    return build_parser().parse_args(["watch", "--config", "x.yaml", f"--interval={text}"]).interval


def _detect_retrain_every(text, tmp_path, monkeypatch):
    seen = {}

    def detect(source, out, **kwargs):
        from training.replay import Replayed

        seen.update(kwargs)
        return Replayed(n_rows=0)

    monkeypatch.setattr("training.replay.detect", detect)
    code = main(["detect", "in.csv", "--out", str(tmp_path / "o.csv"), f"--retrain-every={text}"])
    if code:  # refused: the one-line error is on stderr
        raise SystemExit(code)
    return seen["retrain_every"].total_seconds()


def _live(field):
    def read(text, tmp_path):
        if field == "timeout_s":
            data = {"prometheus": {"url": "http://p:9090", "timeout_s": text}}
            return LiveConfig.model_validate(data).prometheus.timeout_s
        path = tmp_path / "live.yaml"
        # Through the YAML reader, quoted so that YAML hands the text over as written.
        path.write_text(f"prometheus: {{url: 'http://p:9090'}}\n{field}: {json.dumps(text)}\n")
        return getattr(LiveConfig.load(path), field)
    return read


DURATION_PLACES = {
    "data synth --step": _synth_step,
    "data import-prometheus --step": _import_prometheus("--step"),
    "data import-prometheus --timeout": _import_prometheus("--timeout"),
    "retrain --step": _retrain("--step"),
    "retrain --timeout": _retrain("--timeout"),
    "watch --interval": _watch_interval,
    "detect --retrain-every": _detect_retrain_every,
    **{f"live config {f}": _live(f) for f in ("step_s", "window_s", "history_s",
                                               "interval_s", "timeout_s")},
}


def _call(place, text, tmp_path, monkeypatch):
    read = DURATION_PLACES[place]
    if read is _detect_retrain_every:
        return read(text, tmp_path, monkeypatch)
    return read(text, tmp_path)


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
@pytest.mark.parametrize("place", DURATION_PLACES)
def test_every_duration_is_read_the_same_everywhere(place, text, seconds, tmp_path, monkeypatch):
    assert _call(place, text, tmp_path, monkeypatch) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("text", NOT_DURATIONS)
@pytest.mark.parametrize("place", [p for p in DURATION_PLACES if p != "data synth --step"])
def test_every_non_duration_is_refused_everywhere(place, text, tmp_path, monkeypatch, capsys):
    with pytest.raises((SystemExit, ValueError)) as refused:
        _call(place, text, tmp_path, monkeypatch)
    message = str(refused.value) + capsys.readouterr().err
    assert f"{text!r}" in message
    assert "duration" in message or "positive" in message


@pytest.mark.parametrize("text", NOT_DURATIONS)
def test_synth_refuses_the_same_non_durations(text, tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "f"), f"--step={text}"]) == 1
    assert f"step {text!r}" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


# -- the places that read a time --------------------------------------------------------------
def _prometheus_time(option):
    def read(text):
        args = build_parser().parse_args(_attach_time_values(
            ["data", "import-prometheus", "--url", "http://127.0.0.1:9", "--query", "up",
             "--start", "0", "--step", "1m", "--out", "x", option, text]))
        return getattr(args, option.lstrip("-"))
    return read


def _forecast_until(text, monkeypatch, tmp_path):
    seen = {}

    def forecast_file(source, out, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr("training.forecasting.forecast_file", forecast_file)
    code = main(_attach_time_values(["forecast", "in.csv", "--horizon", "1", "--out",
                                     str(tmp_path / "o.csv"), "--until", text]))
    if code:  # refused: the one-line error is on stderr
        raise SystemExit(code)
    return pd.Timestamp(seen["until"])


def _synth_start(text):
    frame = generate_fleet(FleetConfig(n_services=1, days=3.0, step="1h", start=text,
                                       incidents_per_service=0))
    return frame[TIMESTAMP].min()


def _nab_windows(text, tmp_path):
    path = tmp_path / "windows.json"
    path.write_text(json.dumps({"a/b.csv": [[text, text]]}))
    return load_windows(path)["a/b.csv"][0][0]


def _time_places(monkeypatch, tmp_path):
    return {
        "data import-prometheus --start": _prometheus_time("--start"),
        "data import-prometheus --end": _prometheus_time("--end"),
        "forecast --until": lambda t: _forecast_until(t, monkeypatch, tmp_path),
        "FleetConfig.start": _synth_start,
        "NAB windows": lambda t: _nab_windows(t, tmp_path),
    }


TIME_PLACES = ["data import-prometheus --start", "data import-prometheus --end",
               "forecast --until", "FleetConfig.start", "NAB windows"]


@pytest.mark.parametrize("text", TIMES)
@pytest.mark.parametrize("place", TIME_PLACES)
def test_every_time_is_read_the_same_everywhere(place, text, monkeypatch, tmp_path):
    stamp = _time_places(monkeypatch, tmp_path)[place](text)
    assert stamp == INSTANT
    assert str(stamp.tz) == "UTC"


@pytest.mark.parametrize("place", TIME_PLACES)
def test_times_relative_to_now_are_read_everywhere(place, monkeypatch, tmp_path):
    before = pd.Timestamp.now(tz="UTC")
    stamp = _time_places(monkeypatch, tmp_path)[place]("now-1h30m")
    after = pd.Timestamp.now(tz="UTC")
    assert before - pd.Timedelta(minutes=90) <= stamp <= after - pd.Timedelta(minutes=90)


@pytest.mark.parametrize("place", TIME_PLACES)
def test_a_non_time_is_refused_everywhere_naming_it(place, monkeypatch, tmp_path, capsys):
    with pytest.raises((SystemExit, ValueError)) as refused:
        _time_places(monkeypatch, tmp_path)[place]("soon")
    message = str(refused.value) + capsys.readouterr().err
    assert "'soon'" in message and "RFC 3339" in message


@pytest.mark.parametrize(("place", "naive_is_utc"), [
    ("data import-prometheus --start", False),  # an import's range must say its zone
    ("data import-prometheus --end", False),
    ("forecast --until", True),  # as the data files' own zone-less times
    ("FleetConfig.start", True),
    ("NAB windows", True),  # NAB writes its windows in UTC without a zone
])
def test_a_time_without_a_zone_follows_each_places_documented_rule(place, naive_is_utc,
                                                                   monkeypatch, tmp_path, capsys):
    read = _time_places(monkeypatch, tmp_path)[place]
    if naive_is_utc:
        assert read(NAIVE) == INSTANT
    else:
        with pytest.raises(SystemExit):
            read(NAIVE)
        assert "has no timezone" in capsys.readouterr().err
