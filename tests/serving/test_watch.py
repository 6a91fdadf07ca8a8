"""``aiops watch`` against a real Prometheus and a real Alertmanager with a webhook receiver."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from models.alarms import AlarmPolicy
from serving.alerts import ALERT_NAME
from serving.live import LiveConfig, LiveConfigError, WatchedQuery
from serving.loader import ModelHolder
from serving.watch import Watcher, post_alerts
from tests.servers import _require
from tests.serving.conftest import register_champion

pytestmark = pytest.mark.integration

STEP_S = 10
SPIKE_LENGTH_S = 120


def _value(metric: str, t: int, spike_at: int) -> float:
    # A steady series with a little deterministic wobble; checkout's CPU jumps for 2 minutes.
    wobble = 0.01 * math.sin(t / 70.0) + 0.005 * ((t * 7919) % 13) / 13
    if metric == "watch_cpu" and spike_at <= t < spike_at + SPIKE_LENGTH_S:
        return 0.95
    return (0.5 if metric == "watch_cpu" else 0.2) + wobble


@pytest.fixture(scope="module")
def spiky_prometheus(start_prometheus, tmp_path_factory):
    """3 h of 10 s samples ending 5 minutes ago; checkout's CPU spikes 60 minutes before the end."""
    promtool = _require("promtool")
    end = int(time.time()) // 60 * 60 - 300
    start, spike_at = end - 3 * 3600, end - 3600
    lines = []
    for metric, service in (("watch_cpu", "checkout"), ("watch_latency", "search")):
        lines.append(f"# TYPE {metric} gauge")
        lines += [f'{metric}{{service="{service}"}} {_value(metric, t, spike_at)!r} {t}'
                  for t in range(start, end + 1, STEP_S)]
    folder = tmp_path_factory.mktemp("spiky")
    (folder / "history.om").write_text("\n".join([*lines, "# EOF"]) + "\n")
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                    str(folder / "history.om"), str(folder / "tsdb")], check=True, timeout=120,
                   capture_output=True)
    server = start_prometheus([], data_dir=folder / "tsdb")
    return server, spike_at


class Webhook:
    """A webhook receiver: every notification Alertmanager sends, in order."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["content-length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str) -> list[dict]:
        return [a for n in self.received for a in n["alerts"]
                if a["status"] == status and a["labels"].get("alertname") == ALERT_NAME]

    def wait_for(self, status: str, timeout_s: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.alerts(status):
            time.sleep(0.1)
        return self.alerts(status)


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def live(prometheus_url: str, alertmanager_url: str = "http://127.0.0.1:9") -> LiveConfig:
    return LiveConfig.model_validate({
        "prometheus": {"url": prometheus_url, "timeout_s": 5},
        "alertmanager": {"url": alertmanager_url, "timeout_s": 5},
        "step_s": STEP_S, "window_s": 3600, "interval_s": 60,
        "series": [{"service": "checkout", "metric": "cpu",
                    "query": 'watch_cpu{service="checkout"}'},
                   {"service": "search", "metric": "latency",
                    "query": 'watch_latency{service="search"}'}]})


@pytest.fixture
def watch_settings(settings):
    # The policy as it ships: a one-hour merge gap, alerts resolved three quiet steps after.
    assert settings.alarm_policy == AlarmPolicy()
    return settings


def at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def test_alerts_reach_alertmanager_once_then_resolve(spiky_prometheus, start_alertmanager,
                                                     webhook, loaded_model, watch_settings):
    prometheus, spike_at = spiky_prometheus
    alertmanager = start_alertmanager({
        "route": {"receiver": "hook", "group_by": ["alertname", "service"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [
            {"url": webhook.url, "send_resolved": True}]}]})
    posts: list[list] = []

    def post(alerts):
        posts.append(alerts)
        post_alerts(alertmanager.url, alerts, timeout_s=5)

    watcher = Watcher(live(prometheus.url), ModelHolder(loaded_model), watch_settings, post=post)

    before = watcher.cycle(end=at(spike_at - 600))
    assert before.scored == ["checkout/cpu", "search/latency"] and not before.fired
    during = watcher.cycle(end=at(spike_at + 60))
    assert len(during.fired) == 1 and "checkout/cpu" in during.fired[0], during.summary()
    firing = webhook.wait_for("firing")
    assert len(firing) == 1
    assert firing[0]["labels"]["service"] == "checkout"
    assert firing[0]["labels"]["severity"] in {"P0", "P1", "P2", "P3"}
    assert "expected range" in firing[0]["annotations"]["description"]
    assert firing[0]["startsAt"].startswith(at(spike_at).strftime("%Y-%m-%dT%H:%M"))
    # Later cycles while it still fires tell Alertmanager nothing new.
    still = watcher.cycle(end=at(spike_at + 90))  # the spike goes on
    assert not still.fired and not still.kept_open and len(posts) == 1
    listed = httpx.get(f"{alertmanager.url}/api/v2/alerts",
                       params={"filter": f'alertname="{ALERT_NAME}"'}, timeout=5).json()
    assert len(listed) == 1 and listed[0]["status"]["state"] == "active"

    # The spike's last point is at +110 s: three quiet 10 s steps later the alert resolves, with
    # the window still an hour long and the merge gap an hour.
    last = spike_at + SPIKE_LENGTH_S - STEP_S
    assert not watcher.cycle(end=at(last + 2 * STEP_S)).resolved
    after = watcher.cycle(end=at(last + 3 * STEP_S))
    assert len(after.resolved) == 1 and len(posts) == 2
    resolved = webhook.wait_for("resolved")
    assert len(resolved) == 1 and resolved[0]["labels"] == firing[0]["labels"]
    assert resolved[0]["endsAt"].startswith(at(last + STEP_S).strftime("%Y-%m-%dT%H:%M:%S"))
    quiet = watcher.cycle(end=at(spike_at + SPIKE_LENGTH_S + 660))
    assert not (quiet.fired or quiet.resolved) and len(posts) == 2
    time.sleep(2.5)  # two more group intervals: nothing else may arrive
    assert len(webhook.alerts("firing")) == 1 and len(webhook.alerts("resolved")) == 1


def test_a_failed_post_is_retried_next_cycle(spiky_prometheus, loaded_model, watch_settings,
                                             alertmanager_server):
    prometheus, spike_at = spiky_prometheus
    down = Watcher(live(prometheus.url), ModelHolder(loaded_model), watch_settings)
    report = down.cycle(end=at(spike_at + 60))
    assert report.fired and "cannot post to Alertmanager" in report.post_error
    assert down.open == {}  # nothing recorded as told
    # The same watcher, Alertmanager back: the alert goes out on the next cycle.
    down.post = lambda alerts: post_alerts(alertmanager_server.url, alerts, timeout_s=5)
    again = down.cycle(end=at(spike_at + 70))
    assert len(again.fired) == 1 and again.post_error is None and len(down.open) == 1


def test_a_series_prometheus_fails_on_is_skipped_and_named(spiky_prometheus, loaded_model,
                                                           watch_settings):
    prometheus, spike_at = spiky_prometheus
    config = live(prometheus.url)
    bad = config.model_copy(update={"series": [*config.series, config.series[0].model_copy(
        update={"metric": "broken", "query": "watch_cpu{"})]})
    report = Watcher(bad, ModelHolder(loaded_model), watch_settings,
                     post=lambda alerts: None).cycle(end=at(spike_at - 600))
    assert report.scored == ["checkout/cpu", "search/latency"]
    assert "bad_data" in report.failed["checkout/broken"]


def test_cli_watch_runs_cycles_and_explains_bad_setups(spiky_prometheus, loaded_model,
                                                       mlflow_store, tmp_path, monkeypatch,
                                                       capsys):
    import yaml

    from cli import main

    register_champion(loaded_model.bundle, mlflow_store, "watch-test", tmp_path)
    monkeypatch.setenv("AIOPS_CACHE_DIR", str(tmp_path / "cache"))
    prometheus, _ = spiky_prometheus
    config = live(prometheus.url).model_dump()
    del config["alertmanager"]
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(config))

    code = main(["watch", "--config", str(path), "--cycles", "2", "--interval", "1",
                 "--dry-run", "--model-name", "watch-test"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "watching 2 series every 1 s with watch-test version 1" in out
    assert out.count("scored 2 series") == 2

    assert main(["watch", "--config", str(path), "--model-name", "watch-test"]) == 1
    assert "no Alertmanager to post to" in capsys.readouterr().err
    assert main(["watch", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read live config" in capsys.readouterr().err


def fleet(prometheus_url: str, *queries: str | dict) -> LiveConfig:
    return live(prometheus_url).model_copy(update={"series": [], "queries": [
        WatchedQuery.model_validate(q if isinstance(q, dict) else {"query": q})
        for q in queries]})


def test_one_query_per_metric_watches_the_fleet_as_one_query_per_series(
        spiky_prometheus, loaded_model, watch_settings):
    prometheus, spike_at = spiky_prometheus
    by_series = Watcher(live(prometheus.url), ModelHolder(loaded_model), watch_settings,
                        post=lambda alerts: None)
    by_query = Watcher(fleet(prometheus.url, "cpu=watch_cpu", "latency=watch_latency"),
                       ModelHolder(loaded_model), watch_settings, post=lambda alerts: None)
    for end in (spike_at - 600, spike_at + 60):
        one, other = by_series.cycle(end=at(end)), by_query.cycle(end=at(end))
        assert sorted(other.scored) == one.scored == ["checkout/cpu", "search/latency"]
        assert other.fired == one.fired and other.prometheus_queries == 2
    assert len(one.fired) == 1 and set(by_query.open) == set(by_series.open)


def test_a_query_giving_many_series_names_each_by_its_labels(spiky_prometheus, loaded_model,
                                                             watch_settings):
    prometheus, spike_at = spiky_prometheus
    watcher = Watcher(fleet(prometheus.url, '{__name__=~"watch_.+"}'),
                      ModelHolder(loaded_model), watch_settings, post=lambda alerts: None)
    report = watcher.cycle(end=at(spike_at - 600))
    assert sorted(report.scored) == ["checkout/watch_cpu", "search/watch_latency"]
    assert report.prometheus_queries == 1 and "1 Prometheus queries" in report.summary()


def test_a_fleet_query_that_fails_keeps_its_series_alerts_and_is_named(
        spiky_prometheus, loaded_model, watch_settings):
    prometheus, spike_at = spiky_prometheus
    config = fleet(prometheus.url, "cpu=watch_cpu")
    watcher = Watcher(config, ModelHolder(loaded_model), watch_settings, post=lambda alerts: None)
    assert len(watcher.cycle(end=at(spike_at + 60)).fired) == 1
    broken = config.queries[0].model_copy(update={"query": "cpu=watch_cpu{"})
    watcher.config = config.model_copy(update={"queries": [broken]})
    report = watcher.cycle(end=at(spike_at + 70))
    assert report.scored == [] and not report.resolved and len(watcher.open) == 1
    assert "bad_data" in report.failed["checkout/cpu"]
    assert "bad_data" in report.failed_queries["cpu=watch_cpu{"]


def test_two_series_landing_on_one_name_fail_their_query_with_advice(
        spiky_prometheus, loaded_model, watch_settings):
    prometheus, spike_at = spiky_prometheus
    same = 'cpu=label_replace({__name__=~"watch_.+"}, "service", "one", "", "")'
    watcher = Watcher(fleet(prometheus.url, same, {"query": "latency=watch_latency"}),
                      ModelHolder(loaded_model), watch_settings, post=lambda alerts: None)
    report = watcher.cycle(end=at(spike_at - 600))
    assert report.scored == ["search/latency"]
    assert "both give one/cpu" in report.failed_queries[same]
    assert "aggregate them" in report.failed_queries[same]


@pytest.mark.parametrize(("entry", "words"), [
    ({"query": ""}, "at least 1 character"),
    ({"query": "cpu=rate(x[5m])", "labels": {"service_labels": []}}, "at least 1 item"),
    ({"query": "cpu=up", "labels": {"service": "x"}}, "Extra inputs"),
])
def test_a_bad_fleet_query_entry_is_refused_naming_it(tmp_path, entry, words):
    path = tmp_path / "live.yaml"
    path.write_text(json.dumps({"prometheus": {"url": "http://127.0.0.1:9"}, "queries": [entry]}))
    with pytest.raises(LiveConfigError, match=r"queries\.0") as error:
        LiveConfig.load(path)
    assert words in str(error.value)
