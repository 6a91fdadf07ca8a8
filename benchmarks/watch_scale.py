"""``aiops watch`` at fleet scale: many series from one PromQL query, against a real Prometheus.

Usage::

    .venv/bin/python benchmarks/watch_scale.py [--series 20000] [--cycles 10]

Backfills ``--series`` CPU-like gauges at a 1-minute step into a new TSDB with
``promtool tsdb create-blocks-from openmetrics`` (Debian's ``prometheus`` package),
starts ``prometheus`` on it, and runs the watcher's cycles (``serving.watch.Watcher``)
with one fleet query (``cpu=bench_cpu``) over a one-hour window, each cycle one minute
after the last, as ``aiops watch`` does every ``interval_s``. The default detectors are
fitted once, on a day of the same generator, and shared by every series (scoring costs
the same as with distinct fits). Prints each cycle's time, its Prometheus query count and
the series scored; posting to Alertmanager is left out (counted, not sent). A benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

STEP_S = 60
WINDOW_S = 3600


def _values(n_series: int, stamps: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    level = 0.3 + 0.4 * rng.random(n_series)[:, None]
    phase = 2 * np.pi * (stamps % 86_400) / 86_400
    return level + 0.1 * np.sin(phase)[None, :] + rng.normal(0, 0.01, (n_series, len(stamps)))


def backfill(folder: Path, n_series: int, start: int, end: int) -> Path:
    promtool = shutil.which("promtool")
    if promtool is None:
        raise SystemExit("promtool is missing: apt-get install prometheus")
    stamps = np.arange(start, end + 1, STEP_S)
    values = _values(n_series, stamps, 1)
    source = folder / "fleet.om"
    with source.open("w") as out:
        out.write("# TYPE bench_cpu gauge\n")
        for i in range(n_series):
            name = f'bench_cpu{{service="svc{i:05d}"}} '
            out.writelines(f"{name}{v:.5f} {t}\n" for t, v in zip(stamps, values[i], strict=True))
        out.write("# EOF\n")
    tsdb = folder / "tsdb"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                    str(source), str(tsdb)], check=True, capture_output=True, timeout=1800)
    source.unlink()
    return tsdb


def start_prometheus(folder: Path, tsdb: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is missing: apt-get install prometheus")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = folder / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "1m"}, "scrape_configs": []}))
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("prometheus did not become ready within 120 s")


def main() -> None:
    from models.bundle import DEFAULT_DETECTORS, DetectorBundle, fit_series
    from serving.live import LiveConfig
    from serving.loader import LoadedModel, ModelHolder
    from serving.settings import Settings
    from serving.watch import Watcher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()

    # Samples end on the minute, a few minutes ago: inside Prometheus' default retention.
    end = int(time.time()) // 60 * 60 - 300
    start = end - WINDOW_S - args.cycles * STEP_S
    scratch = Path(tempfile.mkdtemp(prefix="aiops-watch-scale-"))
    began = time.perf_counter()
    tsdb = backfill(scratch, args.series, start, end)
    print(f"backfilled {args.series:,} series x {(end - start) // STEP_S + 1} points at "
          f"{STEP_S} s in {time.perf_counter() - began:.0f} s", flush=True)
    process, url = start_prometheus(scratch, tsdb)
    try:
        day = pd.date_range(end=pd.Timestamp(start, unit="s", tz="UTC"), periods=1440,
                            freq=f"{STEP_S}s").as_unit("ns")
        history = pd.Series(_values(1, day.asi8 // 10**9, 2)[0], index=day)
        detectors = fit_series(history, DEFAULT_DETECTORS)
        bundle = DetectorBundle({(f"svc{i:05d}", "cpu"): detectors for i in range(args.series)})
        model = LoadedModel(bundle, "bench", "1", "champion", time.time())
        config = LiveConfig.model_validate({
            "prometheus": {"url": url, "timeout_s": 120}, "step_s": STEP_S,
            "window_s": WINDOW_S, "interval_s": STEP_S,
            "queries": [{"query": "cpu=bench_cpu"}]})
        posted = []
        watcher = Watcher(config, ModelHolder(model), Settings(), post=posted.extend)
        times = []
        print(f"{'cycle':>5}{'seconds':>9}{'queries':>9}{'scored':>9}{'failed':>8}", flush=True)
        for k in range(args.cycles):
            at = pd.Timestamp(start + WINDOW_S + (k + 1) * STEP_S, unit="s", tz="UTC")
            report = watcher.cycle(end=at.to_pydatetime())
            times.append(report.seconds)
            print(f"{k:>5}{report.seconds:>9.1f}{report.prometheus_queries:>9}"
                  f"{len(report.scored):>9}{len(report.failed):>8}", flush=True)
        print(f"{args.series:,} series, one query, {WINDOW_S // STEP_S}-point windows: cycle "
              f"median {statistics.median(times):.1f} s, max {max(times):.1f} s against an "
              f"interval of {STEP_S} s; {len(posted)} alerts would have been posted")
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
