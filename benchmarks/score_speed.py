"""Scoring speed in-process: one 360-point window (1 h at 10 s), and `aiops detect` per file.

Usage::

    .venv/bin/python benchmarks/score_speed.py [--nab ../shared/data/nab] [--repeats 200]

Prints the median and p99 latency of scoring one window with the detectors of a
trained series, and, when a NAB folder is given, the fit-plus-replay time of
`aiops detect` on its realAWSCloudwatch files. A benchmark, not a test: it
measures and prints.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.bundle import DEFAULT_DETECTORS, DetectorBundle, fit_series
from training.replay import detect


def _series(n_points: int, step: str, seed: int) -> pd.Series:
    index = pd.date_range("2026-01-05", periods=n_points, freq=step, tz="UTC")
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(n_points) * pd.Timedelta(step).total_seconds() / 86_400
    return pd.Series(50 + 20 * np.sin(phase) + rng.normal(0, 2, n_points), index=index)


def bench_window(repeats: int) -> None:
    history = _series(7 * 8640, "10s", 0)  # a week at 10 s
    started = time.perf_counter()
    bundle = DetectorBundle({("svc", "cpu"): fit_series(history, DEFAULT_DETECTORS)})
    print(f"fit {', '.join(DEFAULT_DETECTORS)} on a week at 10 s (60,480 points): "
          f"{time.perf_counter() - started:.1f} s")
    window = _series(7 * 8640 + 360, "10s", 1).iloc[-360:]
    bundle.score("svc", "cpu", window)  # warm up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        bundle.score("svc", "cpu", window)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p99 = timings[min(len(timings) - 1, int(0.99 * len(timings)))]
    print(f"score one 360-point window with the default ensemble: "
          f"median {statistics.median(timings):.2f} ms, p99 {p99:.2f} ms over {repeats} runs")


def bench_detect(nab: Path) -> None:
    files = sorted((nab / "data" / "realAWSCloudwatch").glob("*.csv"))
    if not files:
        print(f"no CSV files under {nab}/data/realAWSCloudwatch; skipped aiops detect timing")
        return
    with tempfile.TemporaryDirectory() as scratch:
        timings = []
        for path in files:
            started = time.perf_counter()
            n_rows = detect(path, Path(scratch) / f"{path.stem}.csv")
            timings.append((time.perf_counter() - started, n_rows))
    seconds = [t for t, _ in timings]
    rows = sum(n for _, n in timings)
    print(f"aiops detect, default ensemble (fit on 15 %, causal replay), {len(files)} files, "
          f"{rows} rows: "
          f"median {statistics.median(seconds):.2f} s per file, max {max(seconds):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, help="folder of the NAB subset (../shared/data/nab)")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    bench_window(args.repeats)
    if args.nab:
        bench_detect(args.nab)


if __name__ == "__main__":
    main()
