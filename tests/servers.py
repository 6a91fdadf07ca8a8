"""Real monitoring servers for tests: a synthetic exporter, Prometheus, Alertmanager.

A pytest plugin (``pytest_plugins = ["tests.servers"]`` in ``tests/conftest.py``).
Every server listens on a free loopback port, keeps its data and log in a
temporary folder and is stopped when the session ends. A missing binary
skips the tests that need it, with the reason (Debian: ``apt-get install
prometheus prometheus-alertmanager``); with ``AIOPS_REQUIRE_SERVERS=1`` (``.ci/run``,
which installs them) it fails them instead.

Fixtures
--------
synthetic_exporter
    A prometheus_client HTTP exporter (its own registry) with gauges of two
    services: ``node_cpu_ratio`` and ``request_latency_seconds``, labelled
    ``service``; the values are in ``EXPORTED`` and can be changed.
start_prometheus
    A factory: ``start_prometheus(targets=[url, ScrapeTarget(...)], data_dir=...)``
    starts a Prometheus scraping those targets every second (or none, to
    serve a TSDB folder as it is) and returns a :class:`PrometheusServer`.
prometheus_server
    A Prometheus scraping the synthetic exporter.
prometheus_history
    A Prometheus serving 48 hours of 10 s samples that end a few minutes
    before the session started, backfilled with ``promtool tsdb
    create-blocks-from openmetrics``; the values are :func:`history_value`.
alertmanager_server
    An Alertmanager with one null receiver and clustering off.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from serving.ports import free_port

STARTUP_TIMEOUT_S = 60.0


def find_binary(*names: str) -> str | None:
    """The first of ``names`` on PATH or in /usr/bin."""
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file()
                                       else None)
        if found:
            return found
    return None


#: Set (to 1) where the servers are installed, as ``.ci/run`` does: a missing one then fails
#: the tests that need it instead of skipping them.
REQUIRE_ENV = "AIOPS_REQUIRE_SERVERS"


def _require(*names: str) -> str:
    binary = find_binary(*names)
    if binary is None:
        reason = (f"{' or '.join(names)} is not installed (Debian: apt-get install prometheus "
                  f"prometheus-alertmanager); the real-server tests need it")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    return binary


@dataclasses.dataclass
class RunningServer:
    """A server process started by a fixture: its URL, folder and log."""

    name: str
    url: str
    process: subprocess.Popen
    workdir: Path
    log_path: Path

    def log_tail(self, n_lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n_lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@dataclasses.dataclass(frozen=True)
class ScrapeTarget:
    """A ``/metrics`` URL to scrape, with the job name and extra target labels."""

    url: str
    job: str = "synthetic"
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PrometheusServer(RunningServer):
    data_dir: Path = Path()
    config_path: Path = Path()
    targets: tuple[ScrapeTarget, ...] = ()

    def query(self, promql: str) -> list[dict]:
        """An instant query's result (raises on an error answer)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for(self, promql: str, *, n_series: int = 1, timeout_s: float = 20.0) -> list[dict]:
        """Poll an instant query until it returns at least ``n_series`` series."""
        deadline = time.monotonic() + timeout_s
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) >= n_series:
                return result
            time.sleep(0.25)
        raise TimeoutError(f"{promql!r} returned {len(result)} series after {timeout_s} s, "
                           f"wanted {n_series}; Prometheus log:\n{self.log_tail()}")


def _wait_ready(server: RunningServer, path: str = "/-/ready") -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with code {server.process.returncode} while "
                               f"starting; log:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} was not ready on {server.url}{path} within "
                       f"{STARTUP_TIMEOUT_S} s; log:\n{server.log_tail()}")


def _start(name: str, workdir: Path, command: Callable[[int], list[str]],
           make: Callable[..., RunningServer] = RunningServer, **extra) -> RunningServer:
    """Start ``command(port)`` on a free port; a port taken in the meantime is retried."""
    for attempt in range(3):
        port = free_port()
        log_path = workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command(port), cwd=workdir, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = make(name=name, url=f"http://127.0.0.1:{port}", process=process,
                      workdir=workdir, log_path=log_path, **extra)
        try:
            _wait_ready(server)
            return server
        except RuntimeError:
            server.stop()
            if "address already in use" not in server.log_tail(50) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _scrape_configs(targets: Sequence[ScrapeTarget]) -> list[dict]:
    configs = []
    for i, target in enumerate(targets):
        parts = urlsplit(target.url)
        configs.append({
            "job_name": f"{target.job}-{i}" if any(
                t.job == target.job for t in targets[:i]) else target.job,
            "scheme": parts.scheme or "http",
            "metrics_path": parts.path or "/metrics",
            "static_configs": [{"targets": [parts.netloc], "labels": dict(target.labels)}],
        })
    return configs


def _stopped_at_end(start: Callable[..., RunningServer]) -> Iterator[Callable[..., RunningServer]]:
    """``start``, remembering what it starts; all of it is stopped when the fixture ends."""
    started: list[RunningServer] = []

    def tracked(*args, **kwargs) -> RunningServer:
        started.append(start(*args, **kwargs))
        return started[-1]

    yield tracked
    for server in started:
        server.stop()


# -- the synthetic exporter ----------------------------------------------------------------
#: (metric, service) -> value served by the synthetic exporter.
EXPORTED = {
    ("node_cpu_ratio", "checkout"): 0.42,
    ("node_cpu_ratio", "search"): 0.17,
    ("request_latency_seconds", "checkout"): 0.12,
    ("request_latency_seconds", "search"): 0.045,
}


@dataclasses.dataclass
class SyntheticExporter:
    url: str
    registry: object
    gauges: dict[str, object]

    def set(self, metric: str, service: str, value: float) -> None:
        self.gauges[metric].labels(service=service).set(value)


@pytest.fixture(scope="session")
def synthetic_exporter() -> Iterator[SyntheticExporter]:
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    gauges = {
        "node_cpu_ratio": Gauge("node_cpu_ratio", "CPU busy share", ["service"],
                                registry=registry),
        "request_latency_seconds": Gauge("request_latency_seconds", "p99 request latency",
                                         ["service"], registry=registry),
    }
    for (metric, service), value in EXPORTED.items():
        gauges[metric].labels(service=service).set(value)
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = httpd.server_address[1]
    yield SyntheticExporter(f"http://127.0.0.1:{port}/metrics", registry, gauges)
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


# -- Prometheus -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def start_prometheus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """A factory of Prometheus servers, all stopped at the end of the session.

    ``start_prometheus(targets=(), *, data_dir=None, scrape_interval="1s")``:
    ``targets`` are ``/metrics`` URLs or :class:`ScrapeTarget`; ``data_dir`` is
    the TSDB folder (default: a new temporary one). Call ``.stop()`` on the
    server to stop it earlier.
    """
    binary = _require("prometheus")

    def start(targets: Sequence[str | ScrapeTarget] = (), *, data_dir: Path | None = None,
              scrape_interval: str = "1s") -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        tsdb = Path(data_dir) if data_dir is not None else workdir / "tsdb"
        scrape = tuple(t if isinstance(t, ScrapeTarget) else ScrapeTarget(t) for t in targets)
        config = {"global": {"scrape_interval": scrape_interval,
                             "evaluation_interval": scrape_interval},
                  "scrape_configs": _scrape_configs(scrape)}
        config_path = workdir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config_path.write_text(json.dumps(config, indent=2))

        def command(port: int) -> list[str]:
            return [binary, f"--config.file={config_path}", f"--storage.tsdb.path={tsdb}",
                    f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]

        return _start("prometheus", workdir, command, PrometheusServer, data_dir=tsdb,
                      config_path=config_path, targets=scrape)

    yield from _stopped_at_end(start)


@pytest.fixture(scope="session")
def prometheus_server(start_prometheus, synthetic_exporter) -> PrometheusServer:
    """A Prometheus scraping the synthetic exporter every second."""
    return start_prometheus([synthetic_exporter.url])


#: Backfilled series: (metric name, label name, label value). The service comes from
#: ``service`` for the first two and from ``job`` for the third (the label rule's fallback).
HISTORY_SERIES = (
    ("node_cpu_ratio", "service", "checkout"),
    ("node_cpu_ratio", "service", "search"),
    ("http_latency_seconds", "job", "payments"),
)
HISTORY_STEP_S = 10
HISTORY_HOURS = 48
#: Seconds after the history's start where http_latency_seconds is NaN and +Inf.
HISTORY_NAN_AT_S, HISTORY_INF_AT_S = 3_600, 7_200
#: A counter of ``HISTORY_COUNTER_RATE`` per second (label job="checkout") with no samples for
#: ``HISTORY_SCRAPE_GAP_S`` seconds from ``HISTORY_SCRAPE_GAP_AT_S`` after the start (a
#: Prometheus restart): ``rate(...[5m])`` over the gap dips although the rate never changed.
HISTORY_COUNTER = "http_requests_total"
HISTORY_COUNTER_RATE = 50.0
HISTORY_SCRAPE_GAP_AT_S, HISTORY_SCRAPE_GAP_S = 86_400, 100


def history_value(metric: str, service: str, t: int, start: int) -> float:
    """The backfilled value of a series at Unix second ``t`` (``start``: the history's first)."""
    if metric == "http_latency_seconds":
        if t - start == HISTORY_NAN_AT_S:
            return math.nan
        if t - start == HISTORY_INF_AT_S:
            return math.inf
        return 0.05 + 0.001 * ((t // HISTORY_STEP_S) % 13)
    base = 0.6 if service == "checkout" else 0.3
    return base + 0.2 * math.sin(2 * math.pi * t / 86_400) + 0.001 * ((t // HISTORY_STEP_S) % 7)


@dataclasses.dataclass
class PrometheusHistory:
    server: PrometheusServer
    #: First and last sample, Unix seconds (multiples of 60).
    start: int
    end: int
    step_s: int = HISTORY_STEP_S

    @property
    def url(self) -> str:
        return self.server.url

    def value(self, metric: str, service: str, t: int) -> float:
        return history_value(metric, service, t, self.start)


def _openmetrics(start: int, end: int) -> str:
    lines = []
    for metric in dict.fromkeys(m for m, _, _ in HISTORY_SERIES):
        lines.append(f"# TYPE {metric} gauge")
        for name, label, value in HISTORY_SERIES:
            if name != metric:
                continue
            for t in range(start, end + 1, HISTORY_STEP_S):
                v = history_value(metric, value, t, start)
                text = "NaN" if math.isnan(v) else ("+Inf" if math.isinf(v) else repr(v))
                lines.append(f'{metric}{{{label}="{value}"}} {text} {t}')
    lines.append(f"# TYPE {HISTORY_COUNTER.removesuffix('_total')} counter")
    gap = range(start + HISTORY_SCRAPE_GAP_AT_S,
                start + HISTORY_SCRAPE_GAP_AT_S + HISTORY_SCRAPE_GAP_S)
    for t in range(start, end + 1, HISTORY_STEP_S):
        if t not in gap:
            lines.append(f'{HISTORY_COUNTER}{{job="checkout"}} '
                         f"{HISTORY_COUNTER_RATE * (t - start)!r} {t}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def prometheus_history(start_prometheus, tmp_path_factory) -> PrometheusHistory:
    """48 h of 10 s samples ending 5 minutes ago (inside the default 15-day retention)."""
    promtool = _require("promtool")
    # On the minute, so that imports at a 1-minute step land on samples too.
    end = int(time.time()) // 60 * 60 - 300
    start = end - HISTORY_HOURS * 3_600
    folder = tmp_path_factory.mktemp("history")
    source = folder / "history.om"
    source.write_text(_openmetrics(start, end))
    tsdb = folder / "tsdb"
    made = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                           str(source), str(tsdb)], capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise RuntimeError(f"promtool could not backfill {source}: {made.stderr or made.stdout}")
    # No scrape targets: the server answers from the backfilled blocks alone.
    return PrometheusHistory(start_prometheus([], data_dir=tsdb), start, end)


# -- Alertmanager ---------------------------------------------------------------------------
@dataclasses.dataclass
class AlertmanagerServer(RunningServer):
    config_path: Path = Path()


@pytest.fixture(scope="session")
def start_alertmanager(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., AlertmanagerServer]]:
    """A factory of Alertmanagers, all stopped at the end of the session.

    ``start_alertmanager(config=None)``: ``config`` is Alertmanager's configuration
    as a dict (default: every alert to a null receiver).
    """
    binary = _require("prometheus-alertmanager", "alertmanager")

    def start(config: Mapping | None = None) -> AlertmanagerServer:
        workdir = tmp_path_factory.mktemp("alertmanager")
        config_path = workdir / "alertmanager.yml"
        config = config or {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
        config_path.write_text(json.dumps(config, indent=2))

        def command(port: int) -> list[str]:
            return [binary, f"--config.file={config_path}",
                    f"--storage.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                    "--log.level=warn"]

        return _start("alertmanager", workdir, command, AlertmanagerServer,
                      config_path=config_path)

    yield from _stopped_at_end(start)


@pytest.fixture(scope="session")
def alertmanager_server(start_alertmanager) -> AlertmanagerServer:
    """Alertmanager with a null receiver; its alerts are at ``{url}/api/v2/alerts``."""
    return start_alertmanager()
