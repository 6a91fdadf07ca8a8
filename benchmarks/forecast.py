"""Forecast benchmark: rolling-origin MASE and 80 %-interval coverage per forecaster, and speed.

Usage::

    .venv/bin/python benchmarks/forecast.py [--nab ../shared/data/nab] [--horizon 288]
        [--origins 5] [--fleet-services 4] [--lstm] [--out benchmarks/results/forecast.json]

Series: the realAWSCloudwatch files of NAB (when ``--nab`` is given) and the
request rate and CPU of a synthetic fleet (5-minute steps, 14 days). Each
series is split at 60 %: the *chosen* model is picked on the first part only
(``models.backtest.select_forecaster``: its own rolling-origin backtest),
then every forecaster, fitted on the first part, forecasts ``--horizon``
steps from ``--origins`` origins spread over the last 40 % (conditioned on
the history up to each origin, no refit). MASE is against the seasonal naive
rule's in-sample error on the first part. Also times a 288-step forecast from
two weeks of 5-minute history with a fitted model. A benchmark, not a test.

``--lstm`` adds the LSTM forecaster: ONE network per dataset (NAB, fleet),
trained on the first parts of all its series together
(``models.lstm_forecast.fit_global``), then scored from the same origins.
Its training time, and the fit and forecast times of one LSTM on two weeks
of 5-minute history, are reported too.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from features.csv_files import read_value_csv
from features.series import split_series, to_series
from features.synth import FleetConfig, generate_fleet
from models.backtest import (
    DEFAULT_FORECASTERS,
    ENSEMBLE,
    backtest,
    score_fitted,
    select_forecaster,
    training_part,
)
from models.forecast import make_forecaster

DEFAULT_OUT = Path("benchmarks/results/forecast.json")
SPLIT = 0.6
CHOSEN = "chosen"
LSTM = "lstm"


def _series(nab: Path | None, n_services: int) -> dict[str, pd.Series]:
    out: dict[str, pd.Series] = {}
    if nab is not None:
        files = sorted((nab / "data" / "realAWSCloudwatch").glob("*.csv"))
        if not files:
            sys.exit(f"no CSV files under {nab}/data/realAWSCloudwatch")
        for path in files:
            out[f"nab/{path.stem}"] = to_series(read_value_csv(path, duplicates="first"))
    if n_services:
        fleet = generate_fleet(FleetConfig(n_services=n_services, days=14, step="5min", seed=3))
        for (service, metric), rows in split_series(fleet):
            if metric in ("request_rate", "cpu_utilization"):
                out[f"fleet/{service}/{metric}"] = to_series(rows)
    return out


def _evaluate(task: tuple[str, pd.Series, int, int]) -> tuple[str, dict]:
    name, series, horizon, n_origins = task
    cut = int(len(series) * SPLIT)
    selection = select_forecaster(series.iloc[:cut], horizon)
    scores = backtest(series, DEFAULT_FORECASTERS, horizon=horizon, n_origins=n_origins,
                      train_fraction=SPLIT)
    result = {n: {"mase": s.mase, "coverage": s.coverage} for n, s in scores.items()}
    result[CHOSEN] = {**result[selection.forecaster.name], "model": selection.forecaster.name}
    return name, result


def _global_lstm(series: dict[str, pd.Series], horizon: int, n_origins: int,
                 config: dict) -> tuple[dict[str, dict], dict[str, float]]:
    """One LSTM network per dataset, fitted on the training parts of all its series, scored."""
    from models.lstm_forecast import LstmForecasterConfig, fit_global

    results, fit_seconds = {}, {}
    for group in sorted({k.split("/")[0] for k in series}):
        keys = [k for k in series if k.startswith(group + "/")]
        started = time.perf_counter()
        fitted = fit_global({k: training_part(series[k], SPLIT) for k in keys},
                            LstmForecasterConfig(**config))
        fit_seconds[group] = time.perf_counter() - started
        for key in keys:
            score = score_fitted(series[key], {LSTM: fitted[key]}, horizon=horizon,
                                 n_origins=n_origins, train_fraction=SPLIT)[LSTM]
            results[key] = {"mase": score.mase, "coverage": score.coverage}
    return results, fit_seconds


def _speed(repeats: int, names: tuple[str, ...], lstm_config: dict
           ) -> tuple[dict[str, float], dict[str, float]]:
    """Median time of a 288-step forecast per forecaster, and the time of each fit (s)."""
    index = pd.date_range("2026-01-05", periods=14 * 288, freq="5min", tz="UTC")
    rng = np.random.default_rng(0)
    phase = 2 * np.pi * np.arange(len(index)) / 288
    history = pd.Series(100 + 30 * np.sin(phase) + rng.normal(0, 3, len(index)), index=index)
    timings, fits = {}, {}
    for name in names:
        started = time.perf_counter()
        model = make_forecaster(name, **(lstm_config if name == LSTM else {})).fit(history)
        fits[name] = time.perf_counter() - started
        model.forecast(288, history)  # warm up
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.forecast(288, history)
            runs.append((time.perf_counter() - started) * 1000)
        timings[name] = statistics.median(runs)
    return timings, fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, help="NAB folder (its realAWSCloudwatch files)")
    parser.add_argument("--fleet-services", type=int, default=4)
    parser.add_argument("--horizon", type=int, default=288)
    parser.add_argument("--origins", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--lstm", action="store_true",
                        help="add the LSTM forecaster, one global network per dataset")
    parser.add_argument("--lstm-config", type=json.loads, default={},
                        help='JSON overrides of LstmForecasterConfig, e.g. \'{"epochs": 4}\'')
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    started = time.perf_counter()
    series = _series(args.nab, args.fleet_services)
    tasks = [(n, s, args.horizon, args.origins) for n, s in series.items()]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = dict(pool.map(_evaluate, tasks))
    names = [*DEFAULT_FORECASTERS, ENSEMBLE, CHOSEN]
    lstm_fit_seconds: dict[str, float] = {}
    if args.lstm:
        lstm, lstm_fit_seconds = _global_lstm(series, args.horizon, args.origins,
                                              args.lstm_config)
        for key, score in lstm.items():
            results[key][LSTM] = score
        names.insert(len(DEFAULT_FORECASTERS), LSTM)

    print(f"{len(series)} series, horizon {args.horizon}, {args.origins} origins in the last "
          f"{1 - SPLIT:.0%}; MASE against the seasonal naive rule's in-sample error\n")
    print(f"{'series':<46}" + "".join(f"{n[:21]:>22}" for n in names))
    for key, result in results.items():
        cells = "".join(f"{result[n]['mase']:>12.3f} {result[n]['coverage']:>8.0%}" for n in names)
        print(f"{key[:45]:<46}{cells}  ({result[CHOSEN]['model']})")
    summary = {}
    for group in sorted({k.split("/")[0] for k in results}):
        members = [r for k, r in results.items() if k.startswith(group + "/")]
        summary[group] = {n: {"mase": float(np.mean([r[n]["mase"] for r in members])),
                              "coverage": float(np.mean([r[n]["coverage"] for r in members]))}
                          for n in names}
        naive = summary[group]["seasonal_naive"]["mase"]
        chosen = summary[group][CHOSEN]["mase"]
        print(f"\n{group} ({len(members)} series), mean MASE / coverage of [q10, q90]:")
        for n in names:
            print(f"  {n:<16}{summary[group][n]['mase']:8.3f}{summary[group][n]['coverage']:8.0%}")
        print(f"  chosen / seasonal naive MASE: {chosen / naive:.3f} (target <= 0.85)")
    timed = (*DEFAULT_FORECASTERS, ENSEMBLE, *([LSTM] if args.lstm else []))
    speed, fits = _speed(20, timed, args.lstm_config)
    print("\n288-step forecast from two weeks of 5-minute history, fitted model: "
          + ", ".join(f"{n} {ms:.1f} ms" for n, ms in speed.items()) + " (median of 20)")
    print("fit on those two weeks: " + ", ".join(f"{n} {s:.1f} s" for n, s in fits.items()))
    if args.lstm:
        print("global LSTM training per dataset: " + ", ".join(
            f"{g} {s:.1f} s" for g, s in lstm_fit_seconds.items()))
    total = time.perf_counter() - started
    print(f"total {total:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"horizon": args.horizon, "origins": args.origins,
                                    "series": results, "summary": summary,
                                    "speed_ms": speed, "fit_seconds": fits,
                                    "lstm_config": args.lstm_config if args.lstm else None,
                                    "lstm_global_fit_seconds": lstm_fit_seconds,
                                    "total_seconds": round(total, 1)},
                                   indent=2))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
