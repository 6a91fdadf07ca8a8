"""One stream, three callers: the replay (``aiops detect``), ``POST /v1/score`` and ``aiops
watch`` reading it from a real Prometheus give the same scores and the same alerts."""

from __future__ import annotations

import dataclasses
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from models.alarms import AlarmPolicy
from models.bundle import DEFAULT_DETECTORS, DetectorBundle, fit_available, fit_series
from serving.app import create_app
from serving.live import LiveConfig
from serving.loader import LoadedModel, ModelHolder
from serving.watch import Watcher
from tests.servers import _require
from tests.serving.conftest import window_body
from training.replay import score_series

pytestmark = pytest.mark.integration

STEP_S = 10
WINDOW_S = 4 * 3600
TRAIN_FRACTION = 0.5


@pytest.fixture(scope="module")
def noisy_prometheus(start_prometheus, tmp_path_factory):
    """4 h of seeded noisy samples every 10 s, ending 5 minutes ago, with two level shifts.

    The values are the same in every run, whatever the clock: only the timestamps move.
    """
    promtool = _require("promtool")
    end = int(time.time()) // 60 * 60 - 300
    stamps = range(end - WINDOW_S + STEP_S, end + 1, STEP_S)
    rng = np.random.default_rng(14)
    values = 0.5 + 0.02 * rng.standard_normal(len(stamps))
    values[-650:-590] += 0.3  # ten minutes, ending 98 minutes before the end: resolved
    values[-6:] += 0.3  # the last minute, more than the merge gap later: still firing
    lines = ["# TYPE one_path_cpu gauge"]
    lines += [f'one_path_cpu{{service="checkout"}} {float(v)!r} {t}' for t, v in zip(stamps, values,
                                                                            strict=True)]
    folder = tmp_path_factory.mktemp("one-path")
    (folder / "history.om").write_text("\n".join([*lines, "# EOF"]) + "\n")
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                    str(folder / "history.om"), str(folder / "tsdb")], check=True, timeout=120,
                   capture_output=True)
    return start_prometheus([], data_dir=folder / "tsdb"), end


def test_replay_api_and_watch_agree_on_one_stream(noisy_prometheus, settings):
    prometheus, end_s = noisy_prometheus
    config = LiveConfig.model_validate({
        "prometheus": {"url": prometheus.url, "timeout_s": 10},
        "step_s": STEP_S, "window_s": WINDOW_S, "interval_s": 60,
        "series": [{"service": "checkout", "metric": "cpu",
                    "query": 'one_path_cpu{service="checkout"}'}]})
    end = pd.Timestamp(end_s, unit="s", tz="UTC")
    stream = config.read(config.series[0].query, WINDOW_S, end=end)
    assert len(stream) == WINDOW_S // STEP_S and stream.notna().all()

    # The replay fits on the first rows and scores every row as a stream would.
    n_train = int(len(stream) * TRAIN_FRACTION)
    names = tuple(fit_available(stream.iloc[:n_train], DEFAULT_DETECTORS).detectors)
    assert len(names) >= 2, names
    replayed = score_series(stream, names, TRAIN_FRACTION, retrain_every=None)

    # The service holds the same fit, and pages as it ships.
    bundle = DetectorBundle({("checkout", "cpu"): fit_series(stream.iloc[:n_train], names)})
    model = LoadedModel(bundle, "one-path", "1", "champion", 0.0)
    served = settings.replace(alarm_policy=AlarmPolicy())
    client = TestClient(create_app(served, model))
    answer = client.post("/v1/score", json={"series": [window_body(stream, "checkout", "cpu")]})
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["results"]
    # The API reports six decimals; the ensemble's detectors are summed in another order.
    np.testing.assert_allclose(result["scores"], replayed.to_numpy(), rtol=0, atol=1e-6)

    posted = []
    watcher = Watcher(config, ModelHolder(model), served, post=posted.extend)
    report = watcher.cycle(end=end.to_pydatetime())
    assert report.scored == ["checkout/cpu"] and not report.failed
    # The replay pages where the service's incidents are confirmed: one page each.
    incidents = result["incidents"]
    assert len(incidents) == 2, incidents
    pages = AlarmPolicy().pages(stream.index.as_unit("ns").asi8, replayed.to_numpy())
    paged_at = stream.index[pages]
    assert len(paged_at) == len(incidents)
    for at, incident in zip(paged_at, incidents, strict=True):
        assert pd.Timestamp(incident["start"]) <= at <= pd.Timestamp(incident["end"])

    from_api = answer.json()["alerts"]
    assert [a["status"] for a in from_api] == ["resolved", "firing"], from_api
    from_watch = [dataclasses.asdict(a) for a in posted]
    # The watcher sets endsAt for Alertmanager's sake and links its alerts to Prometheus'
    # graph of the query; the rest is the API's alert.
    assert [_compared(a) for a in from_watch] == [
        _compared(_parsed(a)) for a in from_api if a["status"] == "firing"]


def _compared(alert: dict) -> dict:
    return {k: v for k, v in alert.items() if k not in ("endsAt", "generatorURL")}


def _parsed(alert: dict) -> dict:
    return {**alert, "startsAt": pd.Timestamp(alert["startsAt"]).to_pydatetime()}
