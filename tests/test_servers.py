"""The real-server fixtures of tests/servers.py: each server answers as the real one does."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from tests.servers import EXPORTED


def test_prometheus_scrapes_the_synthetic_exporter(prometheus_server, synthetic_exporter):
    assert prometheus_server.targets[0].url == synthetic_exporter.url
    result = prometheus_server.wait_for("node_cpu_ratio", n_series=2)
    got = {r["metric"]["service"]: float(r["value"][1]) for r in result}
    assert got == {s: v for (m, s), v in EXPORTED.items() if m == "node_cpu_ratio"}
    targets = httpx.get(f"{prometheus_server.url}/api/v1/targets", timeout=10).json()
    assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]


def test_alertmanager_takes_an_alert_and_lists_it(alertmanager_server):
    now = dt.datetime.now(dt.UTC)
    alert = {
        "labels": {"alertname": "AiopsSmokeTest", "service": "checkout", "severity": "P3"},
        "annotations": {"summary": "posted by the fixture's smoke test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + dt.timedelta(minutes=5)).isoformat(),
        "generatorURL": "http://127.0.0.1/aiops",
    }
    posted = httpx.post(f"{alertmanager_server.url}/api/v2/alerts", json=[alert], timeout=10)
    assert posted.status_code == 200, posted.text
    listed = httpx.get(f"{alertmanager_server.url}/api/v2/alerts",
                       params={"filter": 'alertname="AiopsSmokeTest"'}, timeout=10).json()
    assert len(listed) == 1
    assert listed[0]["labels"] == alert["labels"]
    assert listed[0]["annotations"] == alert["annotations"]
    assert listed[0]["status"]["state"] == "active"
    assert [r["name"] for r in listed[0]["receivers"]] == ["null"]



@pytest.mark.parametrize("required", ["0", "1"])
def test_a_missing_server_fails_instead_of_skipping_where_servers_are_required(
        monkeypatch, required):
    """Under ``.ci/run`` (AIOPS_REQUIRE_SERVERS=1) a server not on the machine is a failure."""
    from tests import servers

    monkeypatch.setattr(servers, "find_binary", lambda *names: None)
    monkeypatch.setenv(servers.REQUIRE_ENV, required)
    expected = pytest.fail.Exception if required == "1" else pytest.skip.Exception
    with pytest.raises(expected, match="prometheus is not installed"):
        servers._require("prometheus")
