"""`aiops serve` as a process: SIGTERM drains without dropping a request, SIGKILL leaves
nothing holding its port, and an open API on a public address is refused.

Each test starts its own `aiops serve` (its own Ray, HAProxy in front), as an operator does;
a start takes 20-40 s on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from serving.loader import start_model
from serving.ports import free_port
from serving.settings import Settings
from tests.serving.conftest import daily_series, register_champion, window_body

pytestmark = pytest.mark.integration

MODEL_NAME = "process-test"
START_TIMEOUT_S = 120.0


@dataclass
class ServeProcess:
    process: subprocess.Popen
    url: str
    port: int
    ray_dir: Path
    output: list[str] = field(default_factory=list)

    def wait_ready(self) -> float:
        """Seconds until the ready line, which must come within START_TIMEOUT_S."""
        started = time.monotonic()
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        while time.monotonic() - started < START_TIMEOUT_S:
            if any("ready at" in line for line in self.output):
                return time.monotonic() - started
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"aiops serve was not ready within {START_TIMEOUT_S:g} s "
                             f"(exit {self.process.poll()}):\n" + "".join(self.output[-40:]))

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def logs(self) -> str:
        """Everything the Ray session of this process wrote to its log folder."""
        texts = []
        for path in self.ray_dir.rglob("*"):
            if path.is_file() and path.suffix in (".err", ".out", ".log"):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)


def _clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without the test session's Ray and service settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_SERVE_", "AIOPS_", "RAY_ADDRESS", "MLFLOW_"))}
    env.update(extra)
    return env


@pytest.fixture
def cached_champion(loaded_model, tmp_path) -> Settings:
    """A champion registered in a SQLite store and loaded once into a cache folder."""
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    register_champion(loaded_model.bundle, store, MODEL_NAME, tmp_path)
    settings = Settings(model_name=MODEL_NAME, tracking_uri=store, cache_dir=tmp_path / "cache")
    assert start_model(settings).source == "registry"
    return settings


@pytest.fixture
def serve_process(tmp_path) -> Iterator:
    """A factory: ``serve_process(settings, *args, **env)`` starts `aiops serve`."""
    started: list[ServeProcess] = []

    def start(settings: Settings, *args: str, **env: str) -> ServeProcess:
        port = free_port()
        # Short: Ray's socket paths under it must stay below 108 characters.
        ray_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
        environment = _clean_environment(
            MLFLOW_TRACKING_URI=settings.tracking_uri, AIOPS_MODEL_NAME=settings.model_name,
            AIOPS_CACHE_DIR=str(settings.cache_dir), RAY_TMPDIR=str(ray_dir),
            RAY_AUTH_MODE="disabled", AIOPS_NUM_REPLICAS="1", PYTHONUNBUFFERED="1", **env)
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port),
             "--num-cpus", "2", *args],
            env=environment, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        server = ServeProcess(process, f"http://127.0.0.1:{port}", port, ray_dir)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(30)


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses listening on ``port`` (from /proc/net/tcp; "0.0.0.0": all)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _score_body(n_series: int = 1) -> bytes:
    window = window_body(daily_series(288 * 6, seed=1).iloc[-360:])
    return json.dumps({"series": [dict(window, metric=f"m{i}") if i else window
                                  for i in range(n_series)]}).encode()


def test_sigterm_drains_finishes_requests_in_flight_and_exits_0(cached_champion,
                                                                 serve_process):
    """Started with the registry unreachable (from the cache), then stopped under load."""
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the registry is down
    server = serve_process(Settings(model_name=MODEL_NAME, tracking_uri=down,
                                    cache_dir=cached_champion.cache_dir))
    server.wait_ready()
    ready = httpx.get(f"{server.url}/readyz", timeout=10).json()
    assert ready["model"]["version"] == "1" and ready["model_source"].startswith("cache")

    light, heavy = _score_body(), _score_body(300)
    outcomes: list[tuple[str, float, float, object]] = []  # kind, sent, done, status
    stop = threading.Event()
    signalled: list[float] = []

    def call(kind: str, method: str, path: str, body: bytes | None = None) -> None:
        sent = time.monotonic()
        try:
            status: object = httpx.request(method, server.url + path, content=body,
                                           headers={"content-type": "application/json"},
                                           timeout=60).status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        outcomes.append((kind, sent, time.monotonic(), status))

    def loop(kind: str, method: str, path: str, body: bytes | None, pause_s: float) -> None:
        while not stop.is_set():
            call(kind, method, path, body)
            time.sleep(pause_s)

    workers = [threading.Thread(target=loop, args=("score", "POST", "/v1/score", light, 0.05)),
               threading.Thread(target=loop, args=("readyz", "GET", "/readyz", None, 0.1))]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    in_flight = [threading.Thread(target=call, args=("heavy", "POST", "/v1/score", heavy))
                 for _ in range(2)]
    for request in in_flight:
        request.start()
    time.sleep(0.3)
    signalled.append(time.monotonic())
    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=60)
    stopped_s = time.monotonic() - signalled[0]
    stop.set()
    for thread in [*workers, *in_flight]:
        thread.join(60)

    at = signalled[0]
    drain_s = Settings().drain_s
    assert exit_code == 0, "".join(server.output[-30:])
    assert stopped_s < 30, f"took {stopped_s:.1f} s to stop"
    # The heavy requests were in flight at the signal, and were answered.
    heavy_done = [o for o in outcomes if o[0] == "heavy"]
    assert len(heavy_done) == 2 and all(o[3] == 200 for o in heavy_done), heavy_done
    assert any(o[2] > at for o in heavy_done), "the heavy requests ended before the signal"
    # /readyz turned 503 at once and stayed so ...
    readiness = sorted((o for o in outcomes if o[0] == "readyz" and o[1] > at + 0.3
                        and o[1] < at + drain_s - 0.5), key=lambda o: o[1])
    assert readiness and all(o[3] == 503 for o in readiness), readiness
    # ... while every request sent during the drain was still served.
    drained = [o for o in outcomes if o[0] == "score" and at < o[1] < at + drain_s - 0.5]
    assert drained and all(o[3] == 200 for o in drained), drained
    assert all(o[3] == 200 for o in outcomes if o[0] == "score" and o[1] < at)
    # Logs are not lost at shutdown: the replica's start-up warning and its last line.
    logs = server.logs()
    assert "the API is open" in logs and "replica stopping" in logs


def test_sigkill_leaves_nothing_holding_the_port(cached_champion, serve_process):
    """Also: HAProxy's stats page and metrics listen on loopback only."""
    stats, metrics = free_port(), free_port()
    server = serve_process(cached_champion, RAY_SERVE_HAPROXY_STATS_PORT=str(stats),
                           RAY_SERVE_HAPROXY_METRICS_PORT=str(metrics))
    server.wait_ready()
    # Right after "ready" a replica can still answer 404 for a moment (a known race, see the
    # readiness wait in cli/serve.py); this test is about the ports, so it waits it out.
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "/readyz never answered 200 after ready"
        time.sleep(0.2)
    assert _listening_addresses(stats) == {"127.0.0.1"}
    assert _listening_addresses(metrics) == {"127.0.0.1"}
    assert _listening_addresses(server.port) == {"127.0.0.1"}
    assert not _port_is_free(server.port)
    server.process.kill()  # the process alone, as the OOM killer would
    server.process.wait(10)
    deadline = time.monotonic() + 20
    while not _port_is_free(server.port) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _port_is_free(server.port), "something of the killed service still holds its port"


def test_an_open_api_on_a_public_address_is_refused(cached_champion, serve_process):
    server = serve_process(cached_champion, "--host", "0.0.0.0")
    assert server.process.wait(60) == 1
    output = server.process.stdout.read()
    assert "refusing to serve an open API on 0.0.0.0" in output and "--insecure-open" in output
