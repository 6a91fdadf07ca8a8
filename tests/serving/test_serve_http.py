"""End to end: synthetic fleet → training into a temporary MLflow store → the real Ray Serve
app on a free port → scores over HTTP."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from features.schema import IS_ANOMALY
from features.series import split_series, to_series
from serving.ports import free_port
from serving.settings import Settings
from tests.serving.conftest import window_body
from training.train import TrainOptions, train

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("ray_session")]

MODEL_NAME = "it-detectors"


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def served(fleet_dataset: Path, store_uri: str) -> Iterator[str]:
    from ray import serve

    from serving.deployment import run

    uri = store_uri
    store = Path(uri.removeprefix("sqlite:///")).parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        # No holdout: gating is tested in tests/training; here only a served model is needed,
        # with the detectors as they ship. No forecasters: no test here asks for a forecast
        # (tests/training/test_train.py serves one from a registered bundle).
        result = train(TrainOptions(data=fleet_dataset, model_name=MODEL_NAME, progress=False,
                                    holdout_fraction=0.0, forecast_horizon=0))
    assert result.version == "1"
    settings = Settings(model_name=MODEL_NAME, tracking_uri=uri, cache_dir=store / "cache",
                        port=free_port(), reload_interval_s=1, num_replicas=2)
    run(settings)
    url = f"http://127.0.0.1:{settings.port}"
    # Serve starts in ~8 s on a quiet machine; a loaded 2-core CI box can take far longer.
    deadline = time.monotonic() + 180
    ready = False
    while not ready and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        if not ready:
            time.sleep(0.5)
    assert ready, f"the Serve app at {url} was not ready within 180 s"
    yield url
    serve.delete("aiops")


def test_health_ready_and_openapi_over_http(served):
    assert httpx.get(f"{served}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{served}/readyz").json()
    assert ready["model"] == {"name": MODEL_NAME, "version": "1", "alias": "champion"}
    assert "/v1/score" in httpx.get(f"{served}/openapi.json").json()["paths"]


def test_injected_anomalies_score_higher_than_normal_points(served, small_fleet):
    """Score the last day of every labelled series, one request per service."""
    labelled, normal, windows_with_incidents, caught = [], [], 0, 0
    for service, rows in small_fleet.groupby("service"):
        bodies, truths = [], []
        for (_, metric), series_rows in split_series(rows):
            tail = series_rows.tail(288)
            bodies.append(window_body(to_series(tail), service=service, metric=metric))
            truths.append(tail[IS_ANOMALY].to_numpy())
        response = httpx.post(f"{served}/v1/score", json={"series": bodies}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["version"] == "1"
        for result, truth in zip(body["results"], truths, strict=True):
            assert result["known_series"]
            scores = np.array([np.nan if s is None else s for s in result["scores"]])
            labelled.extend(scores[truth])
            normal.extend(scores[~truth])
            if truth.any():
                # Each incident stands out from the normal points of its own window.
                windows_with_incidents += 1
                caught += bool(np.nanmax(scores[truth]) > np.nanquantile(scores[~truth], 0.95))
    assert labelled, "the fixture fleet must hold incidents in its last day"
    assert np.nanmean(labelled) > np.nanmean(normal) + 0.2
    assert caught == windows_with_incidents


def test_bad_request_is_a_422_over_http(served):
    response = httpx.post(f"{served}/v1/score", json={"series": [{"service": "x"}]})
    assert response.status_code == 422
    assert "series.0.metric" in str(response.json()["detail"])


def test_batched_requests_keep_their_own_answers_and_errors(served, small_fleet):
    """Concurrent requests are scored in batches; a bad one fails alone, with its own 422."""
    from concurrent.futures import ThreadPoolExecutor

    service = small_fleet["service"].iloc[0]
    rows = small_fleet[(small_fleet.service == service) & (small_fleet.metric == "request_rate")]
    good = window_body(to_series(rows.tail(60)), service=service, metric="request_rate")
    bodies = [{"series": [good]}] * 12 + [{"series": [good, good]}] * 4  # repeats: a 422 each
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: httpx.post(f"{served}/v1/score", json=b, timeout=60),
                                bodies))
    assert [a.status_code for a in answers] == [200] * 12 + [422] * 4
    assert all(len(a.json()["results"][0]["scores"]) == 60 for a in answers[:12])
    assert all("repeats" in str(a.json()["detail"]) for a in answers[12:])


def test_unknown_series_is_answered_not_failed(served):
    index = pd.date_range("2026-02-01", periods=120, freq="1min", tz="UTC")
    values = pd.Series(np.r_[np.ones(100), np.full(20, 50.0)], index=index)
    response = httpx.post(f"{served}/v1/score",
                          json={"series": [window_body(values, "brand-new", "metric")]})
    assert response.status_code == 200
    result = response.json()["results"][0]
    assert result["known_series"] is False
    assert result["anomalies"][0]["timestamp"].startswith("2026-02-01T01:40")


def test_every_scrape_shows_the_same_verdicts_whichever_replica_answers(served, small_fleet):
    """Two replicas behind HAProxy: the verdicts live on one board that both render."""
    service = small_fleet["service"].iloc[0]
    rows = small_fleet[(small_fleet.service == service) & (small_fleet.metric == "error_rate")]
    window = to_series(rows.tail(120))
    scored = []
    for shift in (0.0, 50.0):  # two requests, likely on different replicas; the last one wins
        moved = window.copy()
        moved.iloc[-1] += shift
        body = {"series": [window_body(moved, service=service, metric="error_rate")]}
        scored.append(httpx.post(f"{served}/v1/score", json=body, timeout=30).json())
    newest = scored[-1]["results"][0]["scores"][-1]
    line = f'aiops_anomaly_score{{metric="error_rate",service="{service}"}}'
    deadline = time.monotonic() + 10
    seen: list[float | None] = []
    while time.monotonic() < deadline:  # the board takes the replicas' updates asynchronously
        seen = []
        for _ in range(10):
            text = httpx.get(f"{served}/metrics", timeout=10).text
            values = [float(row.split()[-1]) for row in text.splitlines()
                      if row.startswith(line)]
            seen.append(values[0] if values else None)
        if seen == [pytest.approx(newest)] * 10:
            break
        time.sleep(0.2)
    assert seen == [pytest.approx(newest)] * 10, (newest, seen)


def test_a_new_champion_is_served_under_load_without_a_failed_request(served, store_uri,
                                                                     fleet_dataset, small_fleet):
    """Runs last in this module: afterwards the app serves version 2."""
    import threading

    from training.promotion import set_champion

    service = small_fleet["service"].iloc[0]
    rows = small_fleet[(small_fleet.service == service) & (small_fleet.metric == "cpu_utilization")]
    body = {"series": [window_body(to_series(rows.tail(120)), service=service,
                                   metric="cpu_utilization")]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store_uri)
        second = train(TrainOptions(data=fleet_dataset, model_name=MODEL_NAME, progress=False,
                                    holdout_fraction=0.0, forecast_horizon=0,
                                    detectors=("static_threshold", "dynamic_threshold")))
        assert second.version == "2" and not second.champion

        statuses: list[int] = []
        versions: list[str] = []
        stop = threading.Event()

        def stream() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    response = client.post(f"{served}/v1/score", json=body)
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        versions.append(response.json()["model"]["version"])

        threads = [threading.Thread(target=stream) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            set_champion(MODEL_NAME, "2", action="promote", reason="swap under load", by="test")
            deadline = time.monotonic() + 60
            # Both replicas follow the alias, each on its own watcher's clock: wait until
            # the last 20 answers all come from the new version.
            while ((len(versions) < 20 or set(versions[-20:]) != {"2"})
                   and time.monotonic() < deadline):
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert statuses and set(statuses) == {200}, f"{len(statuses)} requests: {set(statuses)}"
    assert versions[0] == "1" and versions[-1] == "2"
    ready = httpx.get(f"{served}/readyz").json()
    assert ready["model"]["version"] == "2" and ready["last_reload_error"] is None


def test_a_killed_replica_is_replaced_and_fewer_than_1_percent_of_requests_fail(served,
                                                                                small_fleet):
    """Two replicas serve; one is killed mid-load; Serve starts another on its own."""
    import threading

    import ray

    service = small_fleet["service"].iloc[0]
    rows = small_fleet[(small_fleet.service == service) & (small_fleet.metric == "request_rate")]
    body = {"series": [window_body(to_series(rows.tail(60)), service=service,
                                   metric="request_rate")]}
    replicas = [name for name in ray.util.list_named_actors(all_namespaces=True)
                if name["name"].startswith("SERVE_REPLICA::aiops#")]
    assert len(replicas) == 2, replicas
    statuses: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    statuses.append(client.post(f"{served}/v1/score", json=body).status_code)
                except httpx.HTTPError:
                    statuses.append(0)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)
        victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
        ray.kill(victim, no_restart=True)
        time.sleep(8.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    failed = sum(s != 200 for s in statuses)
    assert len(statuses) > 100 and failed / len(statuses) < 0.01, (failed, len(statuses))
    # Serve replaces the dead replica by itself.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        alive = [n for n in ray.util.list_named_actors(all_namespaces=True)
                 if n["name"].startswith("SERVE_REPLICA::aiops#")]
        if len(alive) == 2 and replicas[0]["name"] not in {n["name"] for n in alive}:
            break
        time.sleep(1.0)
    else:
        pytest.fail(f"no replacement replica within 90 s: {alive}")
    assert httpx.post(f"{served}/v1/score", json=body, timeout=30).status_code == 200



def _raw_post(url: str, head: str, chunks: Iterable[bytes] = ()) -> tuple[bytes, int]:
    """Send ``head``, then ``chunks`` until the server answers: (the answer, bytes sent)."""
    import select
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(url)
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=60) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # an answer came before the body ended
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = b""
        while not answer.endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer, sent


def test_haproxy_takes_the_requests_and_refuses_a_long_content_length(served):
    """The ingress in use is HAProxy: its own 413 carries no request id and no x-request-id
    header (the app's always do), so a silent fall-back to Ray's proxy fails here."""
    answer, _ = _raw_post(served, "POST /v1/score HTTP/1.1\r\nHost: x\r\ncontent-type: "
                          "application/json\r\ncontent-length: 30000000\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"413", answer
    assert b"x-request-id" not in head.lower()
    problem = json.loads(body)
    assert problem["request_id"] is None and "at most 20000000 accepted" in problem["detail"]


def test_a_chunked_body_past_the_limit_is_cut_off_by_the_replica(served):
    """30 MB chunked (no length) against the 20 MB limit: the replica counts what it reads
    and answers 413 (before, it read it all, and a valid body got its 422 or 200)."""
    limit = Settings().max_body_bytes

    def chunks() -> Iterator[bytes]:
        yield b'6\r\n{"a":"\r\n'
        piece = b"x" * 65536
        for _ in range(30_000_000 // len(piece)):
            yield b"%x\r\n" % len(piece) + piece + b"\r\n"
        yield b'2\r\n"}\r\n0\r\n\r\n'

    answer, _ = _raw_post(served, "POST /v1/score HTTP/1.1\r\nHost: x\r\ncontent-type: "
                          "application/json\r\ntransfer-encoding: chunked\r\n\r\n", chunks())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"413", answer[:300]
    assert f"at most {limit} accepted".encode() in body
