"""Load benchmark of ``/v1/score``: Ray Serve against the same app under plain uvicorn.

Usage::

    .venv/bin/python benchmarks/serving/load.py [--series 50] [--duration 10]
        [--concurrency 1,8,32] [--out benchmarks/results/serving_load.json]

Fits the default detectors on ``--series`` synthetic CPU series (a day at
10 s each), registers the bundle in a throwaway MLflow store, serves it with
Ray Serve (``serving.deployment``, autoscaling up to 2 replicas, batching)
and, as the baseline, with plain uvicorn in another process (one worker,
the same FastAPI app, no Ray). Then, for each server, each request size (one
series per request, and 50) and each concurrency, an asyncio loop of httpx
clients sends one-hour windows at 10 s (360 points) for ``--duration``
seconds and records each request's latency. Prints p50 / p99 latency,
requests and series per second, and failures. Everything runs on this
machine, so the load generator shares the cores with the servers. A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from models.bundle import DEFAULT_DETECTORS, DetectorBundle, fit_series

DEFAULT_OUT = Path("benchmarks/results/serving_load.json")
#: Requests' worth of sliding windows per series (the load cycles through them).
_SLIDING_STEPS = 100
STEP = "10s"
WINDOW = 360


def _history(seed: int, n_points: int) -> pd.Series:
    index = pd.date_range("2026-01-05", periods=n_points, freq=STEP, tz="UTC")
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(n_points) * 10 / 86_400
    level = 30 + 10 * (seed % 5)
    return pd.Series(level + 15 * np.sin(phase) + rng.normal(0, 2, n_points), index=index)


def _fit(seed: int) -> tuple[int, dict]:
    return seed, fit_series(_history(seed, 8640), DEFAULT_DETECTORS)


def build_bundle(n_series: int, directory: Path) -> Path:
    with ProcessPoolExecutor(2) as pool:
        fitted = dict(pool.map(_fit, range(n_series)))
    bundle = DetectorBundle({(f"svc{i:02d}", "cpu"): fitted[i] for i in range(n_series)})
    return bundle.save(directory / "model" / "artifacts" / "bundle")


def windows(n_series: int, grid: bool = False, slide: int = 0, steps: int = 1) -> list[list[dict]]:
    """``steps`` requests' worth of 360-point windows after the training day, per series.

    Each step's windows start ``slide`` points after the last step's (0: the same windows
    every time). ``grid`` sends ``start`` and ``step_s`` instead of the timestamps.
    """
    out = []
    for i in range(n_series):
        stream = _history(i, 8640 + WINDOW + slide * steps).iloc[8640:]
        per_series = []
        for k in range(steps):
            series = stream.iloc[k * slide:k * slide + WINDOW]
            stamps = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in series.index]
            times = ({"start": stamps[0], "step_s": pd.Timedelta(STEP).total_seconds()}
                     if grid else {"timestamps": stamps})
            per_series.append({"service": f"svc{i:02d}", "metric": "cpu", **times,
                               "values": series.round(3).tolist()})
        out.append(per_series)
    return [list(step) for step in zip(*out, strict=True)]


async def load(url: str, bodies: list[bytes], concurrency: int, duration: float) -> dict:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker(offset: int) -> None:
            nonlocal failures
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=bodies[i % len(bodies)],
                                                 headers={"content-type": "application/json"})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failures += not ok
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "failures": failures, "seconds": elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "requests_per_s": len(latencies) / elapsed}


_WRK_SCRIPT = r"""
local bodies, i = {}, 0
init = function(args)
  for _, path in ipairs(args) do
    local f = io.open(path, "rb"); table.insert(bodies, f:read("*a")); f:close()
  end
end
request = function()
  i = i + 1
  return wrk.format("POST", nil, {["content-type"] = "application/json"},
                    bodies[(i % #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %d, "failures": %d, "p50_us": %d, "p99_us": %d, '
    .. '"duration_us": %d}\n', summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def wrk_load(url: str, bodies: list[bytes], concurrency: int, duration: float) -> dict:
    """The same load from wrk (C, one thread): the client takes far less of the shared CPU."""
    import shutil
    import subprocess

    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("--client wrk needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        script.write_text(_WRK_SCRIPT)
        paths = []
        for k, body in enumerate(bodies):
            paths.append(Path(folder) / f"body{k}.json")
            paths[-1].write_bytes(body)
        out = subprocess.run([binary, "-t1", f"-c{concurrency}", f"-d{duration:g}s",
                              "--timeout", "60s", "-s", str(script), url, "--",
                              *map(str, paths)], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK "))
    got = json.loads(line[4:])
    seconds = got["duration_us"] / 1e6
    return {"requests": got["requests"], "failures": got["failures"], "seconds": seconds,
            "p50_ms": got["p50_us"] / 1000, "p99_ms": got["p99_us"] / 1000,
            "requests_per_s": got["requests"] / seconds}


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"{url} was not ready within {timeout:.0f} s")


def _uvicorn(bundle_dir: str, port: int) -> None:
    import uvicorn

    from serving.app import create_app
    from serving.loader import LoadedModel
    from serving.settings import Settings

    model = LoadedModel(DetectorBundle.load(bundle_dir), "bench", "1", "champion", time.time())
    uvicorn.run(create_app(Settings(port=port, max_series_per_request=100), model),
                host="127.0.0.1", port=port, log_level="warning")


def start_serve(bundle_dir: Path, scratch: Path, replicas: int, ingress: str = "haproxy") -> str:
    """Register the bundle in a throwaway MLflow store and serve it with Ray Serve; its URL."""
    import ray
    from mlflow.tracking import MlflowClient

    from serving.deployment import configure_ingress, run
    from serving.settings import Settings

    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("bench")
    client.create_model_version("bench", source=str(bundle_dir.parents[1]))
    client.set_registered_model_alias("bench", "champion", "1")
    port = _free_port()
    settings = Settings(model_name="bench", tracking_uri=uri, cache_dir=scratch / "cache",
                        port=port, max_series_per_request=100, reload_interval_s=0,
                        num_replicas=replicas, ingress=ingress)
    print(f"ingress: {'HAProxy' if configure_ingress(settings) else 'Ray Serve proxy'}", flush=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    run(settings)
    return f"http://127.0.0.1:{port}"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--replicas", type=int, default=0,
                        help="Serve replicas; 0 (default) autoscales between 1 and 2")
    parser.add_argument("--servers", default="ray_serve,uvicorn")
    parser.add_argument("--client", default="httpx", choices=["httpx", "wrk"],
                        help="load generator: an asyncio httpx loop, or wrk (apt-get install wrk)")
    parser.add_argument("--ingress", default="haproxy", choices=["haproxy", "proxy"],
                        help="what takes HTTP in front of the Serve replicas")
    parser.add_argument("--format", default="timestamps", choices=["timestamps", "grid"],
                        help="how windows carry their times: ISO timestamps, or start and step_s")
    parser.add_argument("--slide", type=int, default=0,
                        help="points each request moves every series' window on (0: the same "
                             "windows every request, each scored cold)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="aiops-load-"))
    started = time.perf_counter()
    bundle_dir = build_bundle(args.series, scratch)
    print(f"fitted {len(DEFAULT_DETECTORS)} detectors on {args.series} series in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    # Sliding: 100 requests' worth of windows per series, sent in order, then round again.
    steps = _SLIDING_STEPS if args.slide else 1
    sent = windows(args.series, args.format == "grid", args.slide, steps)
    sizes = {1: [json.dumps({"series": [w]}).encode() for step in sent for w in step],
             args.series: [json.dumps({"series": step}).encode() for step in sent]}
    print(f"windows: {args.format}, " + (f"sliding on by {args.slide} points per request over "
          f"{steps} requests" if args.slide else "the same every request"), flush=True)

    import ray
    from ray import serve

    serve_url = start_serve(bundle_dir, scratch, args.replicas, args.ingress)
    plain_port = _free_port()
    plain = multiprocessing.get_context("spawn").Process(
        target=_uvicorn, args=(str(bundle_dir), plain_port), daemon=True)
    plain.start()
    servers = {name: url for name, url in (("ray_serve", serve_url),
                                           ("uvicorn", f"http://127.0.0.1:{plain_port}"))
               if name in args.servers.split(",")}
    for url in servers.values():
        wait_ready(url)

    results = []
    print(f"{'server':<10}{'series/req':>11}{'conc':>6}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'req/s':>8}{'series/s':>10}{'failed':>8}")
    for name, url in servers.items():
        for size, bodies in sizes.items():
            for concurrency in levels:
                asyncio.run(load(f"{url}/v1/score", bodies, concurrency, 2.0))  # warm-up
                if args.client == "wrk":
                    r = wrk_load(f"{url}/v1/score", bodies, concurrency, args.duration)
                else:
                    r = asyncio.run(load(f"{url}/v1/score", bodies, concurrency, args.duration))
                r |= {"server": name, "series_per_request": size, "concurrency": concurrency,
                      "series_per_s": r["requests_per_s"] * size}
                results.append(r)
                print(f"{name:<10}{size:>11}{concurrency:>6}{r['p50_ms']:>9.1f}"
                      f"{r['p99_ms']:>9.1f}{r['requests_per_s']:>8.1f}{r['series_per_s']:>10.1f}"
                      f"{r['failures']:>8}", flush=True)
    plain.terminate()
    serve.shutdown()
    ray.shutdown()
    overhead = {} if len(servers) < 2 else {c: next(r["p50_ms"] for r in results if r["server"] == "ray_serve"
                        and r["series_per_request"] == 1 and r["concurrency"] == c)
                - next(r["p50_ms"] for r in results if r["server"] == "uvicorn"
                       and r["series_per_request"] == 1 and r["concurrency"] == c)
                for c in levels}
    print("Ray Serve p50 overhead over uvicorn, one series per request: "
          + ", ".join(f"{v:+.1f} ms at {c}" for c, v in overhead.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "serve_overhead_p50_ms": overhead},
                                   indent=2))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
