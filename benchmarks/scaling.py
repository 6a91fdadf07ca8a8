"""Scaling simulator: static peak provisioning, a reactive HPA-like rule and the predictive policy.

Usage::

    .venv/bin/python benchmarks/scaling.py [--nab ../shared/data/nab] [--fleet-services 2]
        [--lead-time-s 120] [--target 0.7] [--out-dir benchmarks/results/scaling]

Each demand series (NAB request counts and CPU series when ``--nab`` is
given; the request rate of a synthetic fleet) is split at 60 %: the first
part trains the predictive policy's forecaster (chosen by backtest), the
last part is replayed step by step. One replica serves
``capacity = p99(demand) / (target × 10)``, so about ten replicas carry the
usual peak at the target utilisation. Policies:

- **static**: the replicas the series' peak needs at the target, all the time;
- **reactive** (Kubernetes' HPA rule): ``ceil(ready × utilisation / target)``
  from the demand just observed, no change within a 10 % tolerance, the
  highest recommendation of the last 5 minutes kept before scaling down, new
  replicas ready only after the lead time;
- **predictive**: this service's plan (``models.capacity.plan_replicas``) on
  a forecast from the history up to the step (priority tier 3: the median
  at the target utilisation, the q90 within full capacity; lead time and
  stabilisation), never below what the
  demand just observed needs, with the same 5-minute scale-down
  stabilisation as the reactive rule; new replicas ready after the lead time.

A step is *breached* when its demand exceeds the ready replicas × capacity.
Prints replica-hours and the share of breached steps per policy, writes a PNG
per series and policy (demand and ready capacity over time) and JSON. A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from features.csv_files import read_value_csv
from features.series import split_series, to_series
from features.synth import FleetConfig, generate_fleet
from models.backtest import select_forecaster
from models.capacity import ScalingPolicy, plan_replicas
from models.forecast import regular_grid

SPLIT = 0.6
NAB_DEMAND = ("elb_request_count", "cpu_utilization", "grok_asg_anomaly")
POLICIES = ("static", "reactive", "predictive")
DEFAULT_OUT = Path("benchmarks/results/scaling")
#: Steps of demand the predictive policy plans over at every step.
PLAN_STEPS = 24


def _series(nab: Path | None, n_services: int) -> dict[str, pd.Series]:
    out: dict[str, pd.Series] = {}
    if nab is not None:
        files = sorted(p for p in (nab / "data" / "realAWSCloudwatch").glob("*.csv")
                       if any(key in p.stem for key in NAB_DEMAND))
        if not files:
            sys.exit(f"no demand series under {nab}/data/realAWSCloudwatch")
        for path in files:
            series = to_series(read_value_csv(path, duplicates="first"))
            out[f"nab/{path.stem}"] = series
    if n_services:
        fleet = generate_fleet(FleetConfig(n_services=n_services, days=14, step="5min", seed=5))
        for (service, metric), rows in split_series(fleet):
            if metric == "request_rate":
                out[f"fleet/{service}"] = to_series(rows)
    return out


def _simulate(demand: np.ndarray, desired_at: Callable[[int, int], int], lead_steps: int,
              start_replicas: int) -> np.ndarray:
    """Ready replicas per step when ``desired_at(step, ready)`` is asked at every step.

    A scale-up ordered at step t is ready at t + lead_steps; a scale-down is immediate.
    """
    n = len(demand)
    ready = np.empty(n, dtype=int)
    current = start_replicas
    pending: list[tuple[int, int]] = []  # (ready at step, replicas)
    for t in range(n):
        for item in [p for p in pending if p[0] <= t]:
            current = max(current, item[1])
            pending.remove(item)
        ready[t] = current
        want = desired_at(t, current)
        if want > current:
            if lead_steps == 0:
                current = want
                ready[t] = current  # a zero lead time serves this very step
            elif not pending or pending[-1][1] < want:
                pending.append((t + lead_steps, want))
        elif want < current:
            current = want
            pending = [p for p in pending if p[1] > want]
    return ready


def _run(task: tuple[str, pd.Series, float, float, Path]) -> tuple[str, dict]:
    name, series, lead_time_s, target, out_dir = task
    step = pd.Timedelta(np.median(np.diff(series.index.asi8)), unit="ns")
    grid = regular_grid(series, step).ffill().bfill()
    cut = int(len(grid) * SPLIT)
    test = grid.iloc[cut:]
    demand = test.to_numpy(dtype="float64")
    capacity = float(np.quantile(grid.to_numpy(), 0.99)) / (target * 10)
    policy = ScalingPolicy(capacity_per_replica=capacity, target_utilisation=target,
                           min_replicas=1, max_replicas=1000, lead_time_s=lead_time_s,
                           stabilisation_s=300, priority=3)
    lead_steps = math.ceil(lead_time_s / step.total_seconds())
    need = policy.replicas_for

    static_n = int(need(np.array([grid.max()]))[0])

    recent: list[int] = []
    stab_steps = max(1, math.ceil(300 / step.total_seconds()))

    def reactive(t: int, ready: int) -> int:
        utilisation = demand[t] / (max(ready, 1) * capacity)
        ratio = utilisation / target
        wanted = ready if abs(ratio - 1) <= 0.1 else max(1, math.ceil(ready * ratio))
        recent.append(wanted)
        window = recent[-stab_steps:]
        return wanted if wanted >= ready else max(window)

    selection = select_forecaster(grid.iloc[:cut], PLAN_STEPS)
    model = selection.forecaster

    planned: list[int] = []

    def predictive(t: int, ready: int) -> int:
        frame = model.forecast(PLAN_STEPS, grid.iloc[: cut + t + 1])
        plan = plan_replicas(frame, policy, ready)
        # The replicas needed from the next step on, and never fewer than this step needs;
        # the autoscaler's own scale-down stabilisation applies, as for the reactive rule.
        wanted = max(plan.replicas_now, int(need(np.array([demand[t]]))[0]))
        planned.append(wanted)
        return wanted if wanted >= ready else max(planned[-stab_steps:])

    started = time.perf_counter()
    ready = {
        "static": np.full(len(demand), static_n),
        "reactive": _simulate(demand, reactive, lead_steps, static_n // 2),
        "predictive": _simulate(demand, predictive, lead_steps, static_n // 2),
    }
    hours = step.total_seconds() / 3600
    result = {"capacity_per_replica": capacity, "forecaster": model.name,
              "seconds": round(time.perf_counter() - started, 1)}
    for policy_name, replicas in ready.items():
        breached = demand > replicas * capacity * (1 + 1e-9)
        result[policy_name] = {"replica_hours": float(replicas.sum() * hours),
                               "breached_share": float(breached.mean()),
                               "mean_utilisation": float(np.mean(demand / (replicas * capacity)))}
    _plot(name, test.index, demand, ready, capacity, out_dir)
    return name, result


def _plot(name: str, index: pd.DatetimeIndex, demand: np.ndarray, ready: dict[str, np.ndarray],
          capacity: float, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    for policy_name, replicas in ready.items():
        fig, ax = plt.subplots(figsize=(11, 3))
        ax.plot(index, demand, lw=0.7, label="demand")
        ax.step(index, replicas * capacity, where="post", lw=0.9, label="ready capacity")
        breached = demand > replicas * capacity
        ax.scatter(index[breached], demand[breached], s=6, color="red", label="breach", zorder=3)
        ax.set_title(f"{name}: {policy_name}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        fig.savefig(out_dir / f"{name.replace('/', '_')}_{policy_name}.png", dpi=80)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path)
    parser.add_argument("--fleet-services", type=int, default=2)
    parser.add_argument("--lead-time-s", type=float, default=120.0)
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    series = _series(args.nab, args.fleet_services)
    tasks = [(n, s, args.lead_time_s, args.target, args.out_dir) for n, s in series.items()]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = dict(pool.map(_run, tasks))

    print(f"{len(results)} demand series, last {1 - SPLIT:.0%} replayed; lead time "
          f"{args.lead_time_s:g} s, target utilisation {args.target:.0%}")
    print(f"{'series':<44}" + "".join(f"{p:>24}" for p in POLICIES) + "   forecaster")
    for name, r in results.items():
        cells = "".join(f"{r[p]['replica_hours']:>14.0f} h {r[p]['breached_share']:>6.1%}"
                        for p in POLICIES)
        print(f"{name[:43]:<44}{cells}   {r['forecaster']}")
    totals = {p: {"replica_hours": sum(r[p]["replica_hours"] for r in results.values()),
                  "breached_share": float(np.mean([r[p]["breached_share"]
                                                   for r in results.values()]))}
              for p in POLICIES}
    print("\nall series: replica-hours, mean share of breached steps")
    for p in POLICIES:
        print(f"  {p:<11}{totals[p]['replica_hours']:>10.0f} h {totals[p]['breached_share']:>8.2%}")
    saving = 1 - totals["predictive"]["replica_hours"] / totals["static"]["replica_hours"]
    extra = totals["predictive"]["replica_hours"] / totals["reactive"]["replica_hours"] - 1
    print(f"predictive vs static: {saving:.1%} fewer replica-hours (target >= 25 %); "
          f"vs reactive: {extra:+.1%} replica-hours (target <= +10 %), breaches "
          f"{totals['predictive']['breached_share']:.2%} vs "
          f"{totals['reactive']['breached_share']:.2%} (target: fewer, and <= 1 %)")
    total = time.perf_counter() - started
    print(f"plots in {args.out_dir}/; total {total:.1f} s")
    (args.out_dir / "scaling.json").write_text(json.dumps(
        {"series": results, "totals": totals, "total_seconds": round(total, 1)}, indent=2))


if __name__ == "__main__":
    main()
