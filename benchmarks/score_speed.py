"""Scoring speed in-process: one 360-point window (1 h at 10 s), and `aiops detect` per file.

Usage::

    .venv/bin/python benchmarks/score_speed.py [--nab ../shared/data/nab] [--repeats 200]

Prints the median and p99 latency of scoring one window with the detectors of a
trained series, the per-series cost through the API's handler (validation,
scoring, alarms, response) with one series per request and with 50, the cost of a window
sliding on by a few points cold and through a score cache, and, when a NAB folder is given,
the fit-plus-replay time of
`aiops detect` on its realAWSCloudwatch files. A benchmark, not a test: it
measures and prints.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from models.bundle import DEFAULT_DETECTORS, DetectorBundle, fit_series
from training.replay import detect


def _series(n_points: int, step: str, seed: int) -> pd.Series:
    # Nanoseconds, as the API parses timestamps (serving/routes/deps.py).
    index = pd.date_range("2026-01-05", periods=n_points, freq=step, tz="UTC").as_unit("ns")
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


def bench_batch(batch: int, repeats: int) -> None:
    """Per-series cost through the API's handler: one series per request against ``batch``."""
    from serving.loader import LoadedModel
    from serving.routes.score import to_query, to_response
    from serving.schemas import ScoreRequest
    from serving.scoring import score_query
    from serving.settings import Settings

    history = _series(2 * 8640, "10s", 0)  # two days at 10 s: scoring cost does not depend on it
    detectors = fit_series(history, DEFAULT_DETECTORS)
    # Every series shares one set of fitted detectors: scoring costs the same as distinct ones.
    bundle = DetectorBundle({(f"svc{i}", "cpu"): detectors for i in range(batch)})
    model = LoadedModel(bundle=bundle, name="bench", version="1", alias="champion",
                        loaded_at=time.time())
    settings = Settings()
    window = _series(2 * 8640 + 360, "10s", 1).iloc[-360:]
    stamps = [t.isoformat() for t in window.index]
    formats = {
        "timestamps": {"timestamps": stamps},
        "grid": {"start": stamps[0], "step_s": 10.0},
    }

    def run(payloads: list[str]) -> float:
        started = time.perf_counter()
        for payload in payloads:
            query = to_query(ScoreRequest.model_validate(json.loads(payload)), settings,
                             "/v1/score")
            to_response(model, score_query(bundle, query)).model_dump_json()
        return time.perf_counter() - started

    for label, times in formats.items():
        bodies = [{"service": f"svc{i}", "metric": "cpu", **times, "values": window.tolist()}
                  for i in range(batch)]
        singles = [json.dumps({"series": [body]}) for body in bodies]
        together = [json.dumps({"series": bodies})]
        run(singles[:2])  # warm up
        one_at_a_time = statistics.median(run(singles) for _ in range(repeats)) / batch * 1000
        batched = statistics.median(run(together) for _ in range(repeats)) / batch * 1000
        print(f"API handler in-process (JSON text to JSON bytes), 360-point windows with "
              f"{label}: {one_at_a_time:.2f} ms per series one series per request, "
              f"{batched:.2f} ms per series {batch} series per request")


def bench_sliding(n_windows: int, slide: int) -> None:
    """A window sliding on by ``slide`` points per request, cold and through a score cache."""
    from models.score_cache import ScoreCache

    history = _series(2 * 8640, "10s", 0)
    detectors = fit_series(history, DEFAULT_DETECTORS)
    bundle = DetectorBundle({("svc", "cpu"): detectors})
    stream = _series(2 * 8640 + 360 + n_windows * slide, "10s", 1).iloc[2 * 8640:]
    windows = [stream.iloc[i * slide:i * slide + 360] for i in range(n_windows)]
    print(f"a 360-point window sliding on by {slide} points, {n_windows} windows "
          f"(context: {', '.join(f'{n} {d.context_points()}' for n, d in detectors.items())})")
    for name in [*sorted(detectors), None]:
        chosen = [name] if name else None
        timings = {}
        for label, cache in (("cold", None), ("cached", ScoreCache())):
            bundle.score("svc", "cpu", windows[0], chosen, cache=cache)  # warm up, first entry
            started = time.perf_counter()
            for window in windows[1:]:
                bundle.score("svc", "cpu", window, chosen, cache=cache)
            timings[label] = (time.perf_counter() - started) / (n_windows - 1) * 1000
            if cache is not None:
                hit_rate = cache.stats().hit_rate
        print(f"  {name or 'ensemble':18s} cold {timings['cold']:6.2f} ms, through the cache "
              f"{timings['cached']:6.2f} ms per window ({timings['cold'] / timings['cached']:.1f}x; "
              f"hit rate {hit_rate:.2f})")


def bench_memory(n_series: int) -> None:
    """Resident memory of the score cache's state: one kept detector's entry per series.

    An entry holds a window's stamps, value bits and scores, whatever the detector: the
    static threshold fills the cache fast, and the default keeps one detector (the forest)
    of the default ensemble.
    """
    import gc

    import psutil

    from models.score_cache import ScoreCache

    detector = fit_series(_series(2 * 8640, "10s", 0), ["static_threshold"])["static_threshold"]
    windows = [_series(2 * 8640 + 360 + k, "10s", 1).iloc[-360:] for k in range(8)]
    cache = ScoreCache(max_bytes=2**40, detectors={"static_threshold"})
    gc.collect()
    before = psutil.Process().memory_info().rss
    for i in range(n_series):
        cache.score((f"svc{i}", "cpu"), detector, windows[i % 8], False)
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    print(f"score cache holding one detector's 360-point window for {n_series:,} series: RSS "
          f"+{grown / 2**20:,.0f} MiB ({grown / n_series:,.0f} bytes a series; its arrays "
          f"{cache.stats().n_bytes / 2**20:,.0f} MiB)")


def bench_detect(nab: Path) -> None:
    files = sorted((nab / "data" / "realAWSCloudwatch").glob("*.csv"))
    if not files:
        print(f"no CSV files under {nab}/data/realAWSCloudwatch; skipped aiops detect timing")
        return
    with tempfile.TemporaryDirectory() as scratch:
        timings = []
        for path in files:
            started = time.perf_counter()
            n_rows = detect(path, Path(scratch) / f"{path.stem}.csv")  # nightly refits, as default
            timings.append((time.perf_counter() - started, n_rows))
    seconds = [t for t, _ in timings]
    rows = sum(n for _, n in timings)
    print(f"aiops detect, default ensemble (fit on 15 %, daily refits, causal replay), "
          f"{len(files)} files, "
          f"{rows} rows: "
          f"median {statistics.median(seconds):.2f} s per file, max {max(seconds):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, help="folder of the NAB subset (../shared/data/nab)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50, help="series per request in the batch run")
    parser.add_argument("--cache-series", type=int, default=100_000,
                        help="series whose windows fill the score cache in the memory run")
    parser.add_argument("--slide", type=int, default=6,
                        help="points a window moves on per request in the sliding run (a minute)")
    args = parser.parse_args()
    bench_window(args.repeats)
    bench_batch(args.batch, max(3, args.repeats // 40))
    bench_sliding(max(20, args.repeats // 2), args.slide)
    bench_memory(args.cache_series)
    if args.nab:
        bench_detect(args.nab)


if __name__ == "__main__":
    main()
