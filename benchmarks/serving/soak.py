"""Soak: a steady load on the Serve app for ten minutes, with the memory of every process.

Usage::

    .venv/bin/python benchmarks/serving/soak.py [--minutes 10] [--concurrency 4]
        [--series 20] [--out benchmarks/results/serving_soak.json]

Serves the default detectors of ``--series`` synthetic series with Ray Serve
(one replica), sends one-series ``/v1/score`` requests from ``--concurrency``
clients for ``--minutes`` minutes in one-minute rounds, and after each round
records the resident memory of the Serve replica and proxy processes and the
round's latency and failures. Prints the memory at the end of the first
round and of the last, and the slope of a straight line fitted to the rounds
after the first (MB per minute): flat memory is a slope near 0. A benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from load import build_bundle, load, start_serve, wait_ready, windows

DEFAULT_OUT = Path("benchmarks/results/serving_soak.json")


def serve_processes() -> dict[int, str]:
    """pid → role of the Serve replica, proxy and HAProxy processes on this machine."""
    found = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if "ServeReplica:" in line or "SERVE_REPLICA" in line:
            found[process.info["pid"]] = "replica"
        elif "ProxyActor" in line:
            found[process.info["pid"]] = "proxy"
        elif process.info["cmdline"] and process.info["cmdline"][0].endswith("/haproxy"):
            found[process.info["pid"]] = "haproxy"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="aiops-soak-"))
    bundle_dir = build_bundle(args.series, scratch)
    bodies = [json.dumps({"series": [w]}).encode() for w in windows(args.series)]
    url = start_serve(bundle_dir, scratch, replicas=1)
    wait_ready(url)
    pids = serve_processes()
    print(f"soak of {url}: {args.concurrency} clients, {args.minutes} one-minute rounds; "
          f"watching {sorted(pids.values())}", flush=True)
    rounds = []
    for minute in range(1, args.minutes + 1):
        result = asyncio.run(load(f"{url}/v1/score", bodies, args.concurrency, 60.0))
        memory = {role: 0.0 for role in set(pids.values())}
        for pid, role in pids.items():
            try:
                memory[role] += psutil.Process(pid).memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                memory[role] = float("nan")
        rounds.append({"minute": minute, **result, "rss_mb": memory})
        print(f"minute {minute:>2}: {result['requests']:>6} requests, "
              f"{result['failures']} failed, p50 {result['p50_ms']:.1f} ms, p99 "
              f"{result['p99_ms']:.1f} ms, RSS " + ", ".join(
                  f"{r} {m:.0f} MB" for r, m in sorted(memory.items())), flush=True)
    for role in sorted(rounds[0]["rss_mb"]):
        series = [r["rss_mb"][role] for r in rounds[1:]] or [rounds[0]["rss_mb"][role]]
        slope = float(np.polyfit(np.arange(len(series)), series, 1)[0]) if len(series) > 1 else 0.0
        print(f"{role}: {rounds[0]['rss_mb'][role]:.0f} MB after minute 1, "
              f"{rounds[-1]['rss_mb'][role]:.0f} MB after minute {args.minutes}; "
              f"slope after minute 1: {slope:+.2f} MB/min")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": rounds}, indent=2))
    from ray import serve

    serve.shutdown()
    print(f"results written to {args.out}; {time.strftime('%H:%M:%S')}")


if __name__ == "__main__":
    main()
