"""The Prometheus importer against a real Prometheus (backfilled history, live scraping).

Fakes (``httpx.MockTransport``) only where a real Prometheus cannot be made to
answer that way: label-rule edge cases and a partial answer with warnings.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from features.prometheus import (
    MAX_POINTS_PER_REQUEST,
    LabelRule,
    LabelRuleError,
    PrometheusImportError,
    PromQuery,
    chunk_ranges,
    import_prometheus,
    last_stored,
    parse_step,
    range_selectors,
)
from features.store import list_series, read_dataset
from tests.servers import EXPORTED, HISTORY_INF_AT_S, HISTORY_NAN_AT_S, ScrapeTarget

#: Starts a real Prometheus (or another local server).
integration = pytest.mark.integration


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (ns)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def recorder() -> tuple[httpx.Client, list[dict[str, str]]]:
    """A real client that notes the form of every query_range request it sends."""
    sent: list[dict[str, str]] = []

    def note(request: httpx.Request) -> None:
        sent.append(dict(httpx.QueryParams(request.read().decode())))

    return httpx.Client(event_hooks={"request": [note]}), sent


def expected(history, metric: str, service: str, start: int, end: int) -> np.ndarray:
    values = np.array([history.value(metric, service, t) for t in range(start, end + 1, 10)])
    return np.where(np.isinf(values), np.nan, values)


# -- parsing and chunking -------------------------------------------------------------------
def test_steps_parse_as_documented():
    assert [parse_step(s) for s in ("10s", "1m", "1m30s", "250ms", "15", "2.5")] == \
        [10.0, 60.0, 90.0, 0.25, 15.0, 2.5]
    for bad in ("0", "-1", "ten", "1m30", "1h-5m", ""):
        with pytest.raises(ValueError, match="step"):
            parse_step(bad)
    with pytest.raises(ValueError, match="at least 1 ms"):
        parse_step("1us")


def test_chunks_hold_at_most_11000_points_and_cover_the_range_once():
    step = 10_000
    start, end = 1_000_000_000, 1_000_000_000 + 17_280 * step
    chunks = chunk_ranges(start, end, step)
    points = [(e - s) // step + 1 for s, e in chunks]
    assert points == [MAX_POINTS_PER_REQUEST, 17_281 - MAX_POINTS_PER_REQUEST]
    assert chunks[0][0] == start and chunks[-1][1] == end
    assert all(b[0] == a[1] + step for a, b in itertools.pairwise(chunks))
    assert chunk_ranges(start, start, step) == [(start, start)]
    assert len(chunk_ranges(start, start + 11_000 * step, step)) == 2  # 11,001 points


def test_a_range_too_long_for_its_step_is_refused_before_any_request(tmp_path):
    client, sent = recorder()
    with pytest.raises(ValueError, match=r"1970-01-01T00:00:00Z to 2026-01-01T00:00:00Z at a "
                                         r"step of 0.01s is [\d,]+ points per series"):
        import_prometheus("http://127.0.0.1:9", ["up"], tmp_path, start=0,
                          end="2026-01-01T00:00:00Z", step="10ms", client=client)
    assert sent == []


def test_named_queries_are_told_apart_from_promql_comparisons():
    assert PromQuery.parse("cpu=rate(node_cpu_seconds_total[1m])") == \
        PromQuery(expr="rate(node_cpu_seconds_total[1m])", name="cpu")
    for text in ('up{job="api"}', "up == 1", "rate(x[1m])", 'sum by (service) (up{a=~"b"})'):
        assert PromQuery.parse(text) == PromQuery(expr=text)


# -- the label rule (fake Prometheus answers) -----------------------------------------------
def fake_prometheus(*results: list[dict], warnings: list[str] | None = None) -> httpx.Client:
    """Answers the n-th query_range request with ``results[n]`` (the last one repeats)."""
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = {"status": "success",
                "data": {"resultType": "matrix", "result": results[min(len(calls), len(results)) - 1]}}
        if warnings:
            body["warnings"] = warnings
        return httpx.Response(200, json=body)

    return httpx.Client(transport=httpx.MockTransport(answer))


def series(labels: dict[str, str], *points: tuple[float, str]) -> dict:
    return {"metric": labels, "values": [list(p) for p in points]}


def test_service_is_the_first_present_label_and_metric_the_name_or_the_query_name(tmp_path):
    client = fake_prometheus([
        series({"__name__": "cpu", "service": "checkout", "job": "node"}, (60, "1")),
        series({"__name__": "cpu", "job": "search"}, (60, "2")),
        series({"__name__": "cpu", "app": "billing", "instance": "a:9100"}, (60, "3")),
        series({"__name__": "cpu", "service": "", "job": "empty-service"}, (60, "4")),
    ])
    report = import_prometheus("http://prom", ["cpu", "load=avg(cpu) by (service)"], tmp_path,
                               start=60, end=60, step="1m", client=client)
    assert sorted((s.service, s.metric) for s in report.series) == [
        ("billing", "cpu"), ("billing", "load"), ("checkout", "cpu"), ("checkout", "load"),
        ("empty-service", "cpu"), ("empty-service", "load"), ("search", "cpu"),
        ("search", "load")]
    assert "labels" not in read_dataset(tmp_path).columns  # other labels are dropped by default


def test_a_custom_rule_from_a_mapping_keeps_the_other_labels(tmp_path):
    rule = LabelRule.from_mapping({"service_labels": ["namespace"], "metric_label": "kind",
                                   "keep_labels": True})
    client = fake_prometheus([series({"namespace": "shop", "kind": "rps", "pod": "p-1"},
                                     (60, "1.5"), (120, "2.5"))])
    import_prometheus("http://prom", ["x"], tmp_path, start=60, end=120, step=60, rule=rule,
                      client=client)
    frame = read_dataset(tmp_path)
    assert list_series(tmp_path) == [("shop", "rps")]
    assert frame["value"].tolist() == [1.5, 2.5]
    assert [dict(x) for x in frame["labels"]] == [{"pod": "p-1"}] * 2
    with pytest.raises(ValueError, match=r"rule.json: unknown key\(s\) \['service_label'\]"):
        LabelRule.from_mapping({"service_label": "job"}, source="rule.json")
    with pytest.raises(ValueError, match="service_labels must be a non-empty list"):
        LabelRule(service_labels=())


def test_a_series_without_service_or_metric_names_the_query_and_labels(tmp_path):
    client = fake_prometheus([series({"instance": "a:9100"}, (60, "1"))])
    with pytest.raises(LabelRuleError, match=r"query 'rate\(x\[1m\]\)': cannot tell the "
                       r"service \(none of the labels service, job, app is set\) nor the "
                       r"metric \(no label __name__; name the query as NAME=PROMQL\) of "
                       r'series \{instance="a:9100"\}'):
        import_prometheus("http://prom", ["rate(x[1m])"], tmp_path, start=60, end=60, step=60,
                          client=client)
    assert not tmp_path.joinpath("service=a").exists() and listing(tmp_path) == {}


def test_two_series_on_one_service_and_metric_are_refused(tmp_path):
    client = fake_prometheus([series({"__name__": "up", "job": "api", "instance": "a"}, (60, "1")),
                              series({"__name__": "up", "job": "api", "instance": "b"}, (60, "1"))])
    with pytest.raises(LabelRuleError, match=r"two series land on api/up: .*instance=\"a\".*"
                                             r"instance=\"b\".*differ in instance"):
        import_prometheus("http://prom", ["up"], tmp_path, start=60, end=60, step=60,
                          client=client)
    assert listing(tmp_path) == {}


#: node_exporter's CPU counter on one host: no service label, one series per cpu and mode.
NODE_CPU = [{"__name__": "node_cpu_seconds_total", "cpu": cpu, "mode": mode, "job": "node",
             "instance": "db-1:9100"} for cpu in ("0", "1") for mode in ("idle", "user")]


def test_the_advice_for_colliding_series_uses_the_labels_they_carry(tmp_path):
    client = fake_prometheus([series(labels, (60, "1")) for labels in NODE_CPU[::3]])
    query = "rate(node_cpu_seconds_total[5m])"
    with pytest.raises(LabelRuleError) as caught:
        import_prometheus("http://prom", [f"cpu={query}"], tmp_path, start=60, end=60, step=60,
                          client=client)
    message = str(caught.value)
    assert "two series land on node/cpu" in message and "differ in cpu, mode" in message
    # The rule took the service from job: aggregate by job, not by a service label none has.
    assert f"`sum by (job) ({query})`" in message and "by (service)" not in message
    assert "a matcher on cpu, mode" in message
    assert "service_labels" not in message  # two labels differ: no one of them is the service

    client = fake_prometheus([series(labels, (60, "1")) for labels in NODE_CPU[::2]])
    rule = LabelRule(service_labels=("instance", "job"))
    with pytest.raises(LabelRuleError, match=r"land on db-1:9100/cpu: .* differ in cpu; .*"
                                             r"`sum by \(instance\) \(rate\(node_cpu_seconds_"
                                             r"total\[5m\]\)\)`.*service_labels: \[cpu\]"):
        import_prometheus("http://prom", [f"cpu={query}"], tmp_path, start=60, end=60, step=60,
                          rule=rule, client=client)


def test_two_queries_landing_on_one_name_are_told_to_name_the_queries_apart(tmp_path):
    client = fake_prometheus([series({"job": "api"}, (60, "1"))])
    with pytest.raises(LabelRuleError, match=r"two series land on api/load: .* of query "
                                             r"'load=avg\(a\)' and .* of query 'load=avg\(b\)'; "
                                             r"name the queries apart"):
        import_prometheus("http://prom", ["load=avg(a)", "load=avg(b)"], tmp_path, start=60,
                          end=60, step=60, client=client)


def test_a_partial_answer_with_warnings_is_an_error(tmp_path):
    client = fake_prometheus([series({"__name__": "up", "job": "api"}, (60, "1"))],
                             warnings=["PromQL info: some series were dropped"])
    with pytest.raises(PrometheusImportError, match="partial answer, Prometheus warned: PromQL "
                                                    "info: some series were dropped"):
        import_prometheus("http://prom", ["up"], tmp_path, start=60, end=60, step=60,
                          client=client)
    assert listing(tmp_path) == {}


# -- a step finer than the data's own sampling -----------------------------------------------
START_S = 1_795_000_020  # on the minute


def answer_at_step(step_s: float, sampled_s: float, value, n_points: int = 240,
                   labels: dict | None = None) -> dict:
    """A query_range series at ``step_s`` over data sampled every ``sampled_s``, as Prometheus
    answers it: each evaluation time takes the last sample at or before it."""
    times = START_S + step_s * np.arange(n_points)
    samples = START_S + sampled_s * np.floor((times - START_S) / sampled_s)
    return series(labels or {"__name__": "node_load1", "job": "node"},
                  *[(float(t), value(float(sample)))
                    for t, sample in zip(times, samples, strict=True)])


def noisy(t: float) -> str:
    return repr(round(0.5 + 0.3 * math.sin(t / 600) + 0.01 * ((t * 7919) % 13), 6))


def import_answer(tmp_path: Path, answer: dict, step_s: float):
    end = START_S + step_s * (len(answer["values"]) - 1)
    return import_prometheus("http://prom", ["node_load1"], tmp_path, start=START_S, end=end,
                             step=step_s, client=fake_prometheus([answer]))


def test_a_step_finer_than_the_sampling_is_warned_about_naming_the_fix(tmp_path, caplog):
    report = import_answer(tmp_path, answer_at_step(15, 60, noisy), 15)
    (imported,) = report.series
    assert imported.sampled_every_s == 60 and imported.n_written == 240  # warned, not refused
    warning = ("warning: node/node_load1: each value repeats about 4 times, so the data looks "
               "sampled every 1m, finer than the step 15s: import with --step 1m")
    assert warning in report.summary()
    assert warning.removeprefix("warning: ") in caplog.text

    # 10 s samples at a 3 s step repeat 3 or 4 times: still an even cadence.
    assert import_answer(tmp_path / "b", answer_at_step(3, 10, noisy), 3).series[0] \
        .sampled_every_s == 10


FLIPS = np.random.default_rng(5).integers(0, 3, size=1_000)


@pytest.mark.parametrize(("step_s", "sampled_s", "value"), [
    (15, 60, lambda t: "1"),  # constant
    (60, 60, noisy),  # the step matches the sampling
    (60, 15, noisy),  # a coarser step
    # A queue length of 0, 1 or 2 repeats itself by chance, at no even cadence.
    (15, 15, lambda t: str(FLIPS[int(t - START_S) // 15])),
    # Replicas: the value holds for long, uneven stretches.
    (15, 15, lambda t: str(3 + int(((t - START_S) // 15) ** 0.5) % 3)),
], ids=["constant", "matching step", "coarser step", "integer gauge", "rare changes"])
def test_series_that_merely_repeat_values_are_not_warned_about(tmp_path, step_s, sampled_s,
                                                               value):
    report = import_answer(tmp_path, answer_at_step(step_s, sampled_s, value), step_s)
    assert report.series[0].sampled_every_s is None
    assert not any("repeats" in line for line in report.summary())


# -- a real Prometheus with 48 hours of history ---------------------------------------------
@integration
def test_48_hours_at_10s_come_in_chunks_of_at_most_11000_points(prometheus_history, tmp_path):
    h = prometheus_history
    client, sent = recorder()
    report = import_prometheus(h.url, ["node_cpu_ratio", "http_latency_seconds"], tmp_path,
                               start=h.start, end=h.end, step="10s", client=client)
    n_points = (h.end - h.start) // 10 + 1
    assert n_points == 17_281
    n_chunks = math.ceil(n_points / MAX_POINTS_PER_REQUEST)
    assert report.n_requests == len(sent) == 2 * n_chunks == 4
    for form in sent:
        assert (float(form["end"]) - float(form["start"])) / float(form["step"]) + 1 <= 11_000
    starts = sorted(float(f["start"]) for f in sent if f["query"] == "node_cpu_ratio")
    assert starts == [h.start, h.start + 11_000 * 10]

    assert {(s.service, s.metric): s.n_written for s in report.series} == {
        ("checkout", "node_cpu_ratio"): n_points, ("search", "node_cpu_ratio"): n_points,
        ("payments", "http_latency_seconds"): n_points}
    frame = read_dataset(tmp_path)
    for (service, metric), rows in frame.groupby(["service", "metric"]):
        stamps = rows["timestamp"].astype("int64") // 10**9
        assert stamps.tolist() == list(range(h.start, h.end + 1, 10))
        np.testing.assert_array_equal(rows["value"].to_numpy(),
                                      expected(h, metric, service, h.start, h.end))
    latency = next(s for s in report.series if s.metric == "http_latency_seconds")
    assert (latency.n_nan, latency.n_infinite) == (1, 1)
    payments = frame[frame["service"] == "payments"].set_index("timestamp")["value"]
    for offset in (HISTORY_NAN_AT_S, HISTORY_INF_AT_S):
        assert math.isnan(payments[pd.Timestamp(h.start + offset, unit="s", tz="UTC")])
    assert payments.notna().sum() == n_points - 2  # no other gap, and no gap became a zero


@integration
def test_a_second_run_adds_only_new_rows_and_a_third_adds_none(prometheus_history, tmp_path):
    h = prometheus_history
    first_end, second_end = h.start + 20 * 3600, h.start + 30 * 3600
    first = import_prometheus(h.url, ["node_cpu_ratio"], tmp_path, start=h.start, end=first_end,
                              step="1m")
    assert [s.resumed_after for s in first.series] == [None, None]
    assert last_stored(tmp_path, "checkout", "node_cpu_ratio") == \
        pd.Timestamp(first_end, unit="s", tz="UTC")

    second = import_prometheus(h.url, ["node_cpu_ratio"], tmp_path, start=h.start,
                               end=second_end, step="1m")
    for s in second.series:
        assert s.resumed_after == pd.Timestamp(first_end, unit="s", tz="UTC")
        assert (s.n_written, s.n_skipped) == (10 * 60, 20 * 60 + 1)
        assert s.first == pd.Timestamp(first_end + 60, unit="s", tz="UTC")

    before = listing(tmp_path)
    third = import_prometheus(h.url, ["node_cpu_ratio"], tmp_path, start=h.start,
                              end=f"{pd.Timestamp(second_end, unit='s', tz='UTC').isoformat()}",
                              step="1m")
    assert third.n_written == 0 and third.n_skipped == 2 * (30 * 60 + 1)
    assert listing(tmp_path) == before

    frame = read_dataset(tmp_path)  # refuses a timestamp stored twice
    for service, rows in frame.groupby("service"):
        stamps = (rows["timestamp"].astype("int64") // 10**9).tolist()
        assert stamps == list(range(h.start, second_end + 1, 60))
        np.testing.assert_array_equal(rows["value"].to_numpy(),
                                      expected(h, "node_cpu_ratio", service, h.start,
                                               second_end)[::6])


@integration
def test_a_step_finer_than_the_10s_samples_is_warned_about(prometheus_history, tmp_path):
    h = prometheus_history
    fine = import_prometheus(h.url, ["node_cpu_ratio"], tmp_path / "fine", start=h.start,
                             end=h.start + 3600, step="2500ms")
    assert [s.sampled_every_s for s in fine.series] == [10, 10]
    assert "warning: checkout/node_cpu_ratio: each value repeats about 4 times, so the data " \
           "looks sampled every 10s, finer than the step 2.5s: import with --step 10s" \
           in fine.summary()
    right = import_prometheus(h.url, ["node_cpu_ratio"], tmp_path / "right", start=h.start,
                              end=h.start + 3600, step="10s")
    assert [s.sampled_every_s for s in right.series] == [None, None]


@integration
def test_start_is_moved_onto_the_step_grid(prometheus_history, tmp_path):
    h = prometheus_history
    report = import_prometheus(h.url, ["node_cpu_ratio"], tmp_path, start=h.start + 61,
                               end=h.start + 600, step="1m", timeout_s=2.5)
    assert report.start == pd.Timestamp(h.start + 120, unit="s", tz="UTC")
    assert [s.n_written for s in report.series] == [9, 9]


@pytest.fixture
def filled_store(prometheus_history, tmp_path) -> Path:
    h = prometheus_history
    import_prometheus(h.url, ["node_cpu_ratio"], tmp_path / "store", start=h.start,
                      end=h.start + 3600, step="1m")
    return tmp_path / "store"


@integration
def test_bad_promql_shows_prometheus_message_and_writes_nothing(prometheus_history, filled_store):
    h = prometheus_history
    before = listing(filled_store)
    with pytest.raises(PrometheusImportError) as caught:
        # The first query succeeds; nothing of it may be written once the second fails.
        import_prometheus(h.url, ["node_cpu_ratio", "rate(node_cpu_ratio[1m]"], filled_store,
                          start=h.start, end=h.end, step="1m")
    error = caught.value
    assert (error.status_code, error.error_type) == (400, "bad_data")
    assert "parse error" in error.prometheus_error
    message = str(error)
    assert h.url in message and "query 'rate(node_cpu_ratio[1m]'" in message
    assert "HTTP 400, bad_data: 1:" in message and "nothing was written" in message
    assert pd.Timestamp(h.start, unit="s", tz="UTC").strftime("chunk %Y-%m-%dT%H:%M") in message
    assert listing(filled_store) == before


@integration
def test_a_chunk_failing_midway_writes_nothing(prometheus_history, filled_store):
    h = prometheus_history
    before = listing(filled_store)
    sent = []

    def drop_the_second(request: httpx.Request) -> None:
        sent.append(request)
        if len(sent) == 2:
            raise httpx.ReadError("connection reset by peer", request=request)

    client = httpx.Client(event_hooks={"request": [drop_the_second]})
    with pytest.raises(PrometheusImportError, match=r"query 'node_cpu_ratio', chunk "
                                                    r".*the request failed \(ReadError"):
        import_prometheus(h.url, ["node_cpu_ratio"], filled_store, start=h.start, end=h.end,
                          step="10s", client=client)
    assert len(sent) == 2 and listing(filled_store) == before


@integration
def test_an_infinite_value_is_refused_when_asked(prometheus_history, filled_store):
    h = prometheus_history
    before = listing(filled_store)
    with pytest.raises(ValueError, match=r"payments/http_latency_seconds has 1 infinite value"):
        import_prometheus(h.url, ["http_latency_seconds", "node_cpu_ratio"], filled_store,
                          start=h.start, end=h.start + 3 * 3600, step="10s",
                          on_infinite="error")
    assert listing(filled_store) == before


@integration
def test_an_unreachable_prometheus_writes_nothing(filled_store):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    before = listing(filled_store)
    with pytest.raises(PrometheusImportError, match=rf"127.0.0.1:{port}, query 'up', chunk .*: "
                                                    r"cannot connect"):
        import_prometheus(f"http://127.0.0.1:{port}", ["up"], filled_store,
                          start="2026-01-01T00:00:00Z", end="2026-01-01T01:00:00Z", step="1m")
    assert listing(filled_store) == before


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that takes connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    sock.close()


@integration
def test_a_prometheus_that_does_not_answer_in_time_writes_nothing(silent_server, filled_store):
    before = listing(filled_store)
    with pytest.raises(PrometheusImportError, match=r"no answer within the timeout of 0.5 s"):
        import_prometheus(silent_server, ["up"], filled_store, start="2026-01-01T00:00:00Z",
                          end="2026-01-01T01:00:00Z", step="1m", timeout_s=0.5)
    assert listing(filled_store) == before


def test_a_non_prometheus_answer_is_named(tmp_path):
    client = httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(502, text="<html>Bad Gateway</html>")))
    with pytest.raises(PrometheusImportError, match=r"HTTP 502 with no Prometheus JSON answer: "
                                                    r"'<html>Bad Gateway</html>'"):
        import_prometheus("http://proxy/prometheus", ["up"], tmp_path, start=0, end=60,
                          step=60, client=client)


@pytest.fixture
def node_exporters() -> Iterator[list[str]]:
    """Two exporters shaped like node_exporter on two hosts: ``node_load1`` with no labels."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    started = []
    for load in (0.5, 1.5):
        registry = CollectorRegistry()
        Gauge("node_load1", "1m load average", registry=registry).set(load)
        started.append(start_http_server(0, addr="127.0.0.1", registry=registry))
    yield [f"http://127.0.0.1:{httpd.server_address[1]}/metrics" for httpd, _ in started]
    for httpd, thread in started:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@integration
def test_the_advice_for_two_node_exporters_works_on_a_real_prometheus(start_prometheus,
                                                                      node_exporters, tmp_path):
    # One job "node", two instances, as a Prometheus scraping node_exporter on two hosts.
    server = start_prometheus([ScrapeTarget(url, job="node", labels={"job": "node"})
                               for url in node_exporters])
    try:
        server.wait_for("count_over_time(node_load1[1m]) >= 3", n_series=2)
        now = pd.Timestamp.now(tz="UTC")
        window = {"start": now - pd.Timedelta(seconds=30), "end": now, "step": "1s"}
        with pytest.raises(LabelRuleError) as caught:
            import_prometheus(server.url, ["node_load1"], tmp_path / "refused", **window)
        message = str(caught.value)
        assert "two series land on node/node_load1" in message and "differ in instance" in message
        assert "service_labels: [instance]" in message

        aggregated = re.search(r"`([^`]+)`", message).group(1)
        assert aggregated == "sum by (job) (node_load1)"
        report = import_prometheus(server.url, [f"node_load1={aggregated}"], tmp_path / "sum",
                                   **window)
        assert [(s.service, s.metric) for s in report.series] == [("node", "node_load1")]
        summed = read_dataset(tmp_path / "sum")["value"]
        # Both hosts' loads, once both are scraped (the first scrapes may hold one of them).
        assert summed.iloc[-1] == 2.0 and set(summed) <= {0.5, 1.5, 2.0}

        report = import_prometheus(server.url, ["node_load1"], tmp_path / "apart",
                                   rule=LabelRule(service_labels=("instance",)), **window)
        assert sorted(s.service for s in report.series) == sorted(
            url.removeprefix("http://").removesuffix("/metrics") for url in node_exporters)
    finally:
        server.stop()


# -- a real Prometheus scraping the synthetic exporter ---------------------------------------
@integration
def test_live_series_are_imported_with_their_labels(prometheus_server, tmp_path):
    for metric in ("node_cpu_ratio", "request_latency_seconds"):
        # A few scrapes, so that the range has samples before its last evaluation time.
        prometheus_server.wait_for(f"count_over_time({metric}[1m]) >= 3", n_series=2)
    now = pd.Timestamp.now(tz="UTC")
    rule = LabelRule(keep_labels=True)
    report = import_prometheus(prometheus_server.url,
                               ['{__name__=~"node_cpu_ratio|request_latency_seconds"}'],
                               tmp_path, start=now - pd.Timedelta(minutes=2), end=now,
                               step="1s", rule=rule)
    assert {(s.service, s.metric) for s in report.series} == {(s, m) for m, s in EXPORTED}
    frame = read_dataset(tmp_path)
    for (service, metric), rows in frame.groupby(["service", "metric"]):
        assert len(rows) >= 1
        assert set(rows["value"]) == {EXPORTED[(metric, service)]}
        labels = dict(rows["labels"].iloc[0])
        assert labels["job"] == "synthetic" and labels["instance"].startswith("127.0.0.1:")
        assert "service" not in labels and "__name__" not in labels
    assert json.dumps(report.summary())  # printable


def test_two_imports_into_one_store_at_once_store_each_row_once(tmp_path, monkeypatch):
    """Each reads "the last stored point" and appends after it: one at a time."""
    import threading
    import time

    import features.prometheus as prometheus

    slow_read = prometheus.last_stored

    def last_stored(*args, **kwargs):
        found = slow_read(*args, **kwargs)
        time.sleep(0.3)  # the other import gets here before this one has written
        return found

    monkeypatch.setattr(prometheus, "last_stored", last_stored)
    points = [(60 * i, str(i)) for i in range(1, 11)]
    errors = []

    def run() -> None:
        try:
            import_prometheus("http://prom", ["cpu"], tmp_path, start=60, end=600, step=60,
                              client=fake_prometheus([series({"__name__": "cpu",
                                                              "service": "web"}, *points)]))
        except Exception as error:  # reported below, with the other thread's outcome
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert read_dataset(tmp_path)["value"].tolist() == [float(i) for i in range(1, 11)]


@pytest.mark.parametrize(("query", "selectors"), [
    ("rate(x[5m])", ["x[5m]"]),
    ('sum by (service) (rate(http_requests_total{job="api",code=~"5.."}[5m]))',
     ['http_requests_total{job="api",code=~"5.."}[5m]']),
    ('rate(x[5m] offset 1h) / rate(y{a="b"} [1m])', ["x[5m] offset 1h", 'y{a="b"}[1m]']),
    ('avg_over_time({__name__="x"}[10m])', ['{__name__="x"}[10m]']),
    ("rate(x[5m]) + rate(x[5m])", ["x[5m]"]),
    ("up", []),
    ('node_cpu_ratio{service="checkout"}', []),
    ("max_over_time(rate(x[1m])[1h:1m])", ["x[1m]"]),  # a subquery is not a range selector
])
def test_range_selectors_are_found_as_written(query, selectors):
    assert range_selectors(query) == selectors
