"""Fleet events benchmark: event-level precision, recall and F1 per incident kind on a synthetic fleet.

Usage::

    .venv/bin/python benchmarks/fleet_events.py [--services 8 --days 14 --step 1min --seed 1]
        [--latency-factor 2,4]
        [--threshold 0.9999] [--min-points 2] [--retrain-every 1D|never]
        [--detectors static_threshold,combined] [--no-correlation]
        [--jobs 2] [--out benchmarks/results/fleet_events.json]

Each series of the fleet is fitted on its first 20 % (where the synthetic fleet
places no incident), refitted every day on all rows so far, and scored
causally over all of it with ``training.replay.score_series``; alarms are
scores at or above the threshold that the alarm policy confirms (two alarmed
points within the merge gap, or one very rare point), and alarms in the
fitted part are ignored. Detectors: every registered one but
the window baseline, ``combined`` (``aiops detect``'s default: the geometric mean of
its default detectors' tail probabilities) and, when available, the multi-metric
``correlation`` detector, fitted per service on the same first 20 %.

Events, without point-adjustment:

- an *incident* is one row of ``features.synth.incident_table``, possibly
  spanning several metrics of one service; it is *found* when any of its
  labelled metrics has an alarm inside its ``[start, end]``, and counts once;
- an *alarm run* is a run of consecutive alarmed points of one series; it is
  *correct* when it overlaps an incident of its service (any metric of the
  service: an alarm on CPU during a latency incident is not a false alarm),
  and *false* otherwise;
- overall, precision = correct runs / all runs and recall = found / incidents;
- per kind, recall counts that kind's incidents, and precision is that of a
  fleet whose only incidents were of that kind: runs overlapping an incident
  of the kind against those runs plus every false run (runs on other kinds'
  incidents are left out).

A benchmark, not a test: it measures and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import METRIC, SERVICE, TIMESTAMP, VALUE
from features.series import SeriesKey, split_series, to_series
from features.synth import INCIDENT_KINDS, FleetConfig, generate_fleet, incident_table
from models import registered_names
from models.alarms import ALARM_THRESHOLD, AlarmPolicy, find_incidents
from models.bundle import DEFAULT_DETECTORS
from models.evaluation import EventScores, runs
from training.replay import MIN_TRAIN_POINTS, score_series

COMBINED = "combined"
CORRELATION = "correlation"
EXCLUDED = ("window_baseline",)
TRAIN_FRACTION = 0.2
DEFAULT_OUT = Path("benchmarks/results/fleet_events.json")
WATCHED_KIND = "latency_up_cpu_normal"

# Set before the worker pool forks, so that workers read the series without pickling them.
_SERIES: dict[SeriesKey, pd.Series] = {}


@dataclasses.dataclass
class EventReport:
    """Event counts of one detector over the fleet.

    ``found_by`` lists, per incident (in ``incident_table`` order), the labelled
    metrics that had an alarm inside it (empty when missed).
    """

    overall: EventScores
    by_kind: dict[str, EventScores]
    n_false_runs: int
    found_by: list[list[str]]


def match_incidents(incidents: pd.DataFrame, alarms: Mapping[SeriesKey, pd.Series]) -> EventReport:
    """Match alarm runs to incidents, as described in the module docstring.

    Parameters
    ----------
    incidents : pandas.DataFrame
        ``incident_table`` output: ``service``, ``incident`` (kind), ``start``,
        ``end`` (inclusive) and ``metrics`` (comma-joined).
    alarms : mapping of (service, metric) to boolean Series
        Alarms per series, indexed by timestamp; rows that must not count (the
        fitted part) are False.
    """
    by_service: dict[str, pd.DataFrame] = {
        str(s): rows for s, rows in incidents.groupby(SERVICE, sort=False)
    }
    # Which kinds each alarm run overlaps; an empty set is a false run.
    run_kinds: list[set[str]] = []
    for (service, _metric), flags in alarms.items():
        stamps = flags.index
        own = by_service.get(service)
        for a, b in runs(flags.to_numpy()):
            first, last = stamps[a], stamps[b - 1]
            if own is None:
                run_kinds.append(set())
                continue
            hit = (own["start"] <= last) & (own["end"] >= first)
            run_kinds.append(set(own.loc[hit, "incident"].astype(str)))

    found_by = []
    for row in incidents.itertuples(index=False):
        metrics = []
        for metric in str(row.metrics).split(","):
            flags = alarms.get((row.service, metric))
            if flags is not None and bool(flags.loc[row.start : row.end].any()):
                metrics.append(metric)
        found_by.append(metrics)

    kinds = incidents["incident"].astype(str).to_numpy()
    found = np.array([bool(m) for m in found_by], dtype=bool)
    n_false = sum(1 for k in run_kinds if not k)
    by_kind = {}
    for kind in INCIDENT_KINDS:
        n_correct = sum(1 for k in run_kinds if kind in k)
        by_kind[kind] = EventScores(
            n_events=int((kinds == kind).sum()),
            n_found=int(found[kinds == kind].sum()),
            n_alarm_runs=n_correct + n_false,
            n_correct_alarm_runs=n_correct,
        )
    overall = EventScores(
        n_events=len(kinds),
        n_found=int(found.sum()),
        n_alarm_runs=len(run_kinds),
        n_correct_alarm_runs=len(run_kinds) - n_false,
    )
    return EventReport(overall=overall, by_kind=by_kind, n_false_runs=n_false, found_by=found_by)


def _n_train(n_points: int) -> int:
    # The same split as score_series.
    return max(int(n_points * TRAIN_FRACTION), MIN_TRAIN_POINTS)


def _score_one(task: tuple[SeriesKey, tuple[str, ...], pd.Timedelta | None, AlarmPolicy]
               ) -> tuple[SeriesKey, np.ndarray | None, str]:
    key, names, retrain_every, policy = task
    try:
        scores = score_series(_SERIES[key], names, TRAIN_FRACTION, retrain_every, policy=policy)
        return key, scores.to_numpy(), ""
    except (ValueError, TypeError) as error:
        return key, None, f"{type(error).__name__}: {error}"


def _score_detector(names: tuple[str, ...], retrain_every: pd.Timedelta | None, jobs: int,
                    policy: AlarmPolicy) -> tuple[dict[SeriesKey, np.ndarray], dict]:
    tasks = [(key, names, retrain_every, policy) for key in _SERIES]
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(_score_one, tasks))
    else:
        results = [_score_one(task) for task in tasks]
    scores = {key: s for key, s, _ in results if s is not None}
    failures = {f"{key[0]}/{key[1]}": reason for key, s, reason in results if s is None}
    return scores, failures


def confirmed_alarms(values: np.ndarray, flags: np.ndarray, index: pd.DatetimeIndex,
                     policy: AlarmPolicy) -> np.ndarray:
    """The points of the incidents the policy pages, from its first alarmed point to its last.

    The service's own grouping (``models.alarms.find_incidents``): alarmed points less
    than ``merge_gap_s`` apart are one incident, paged once it is confirmed; counting
    those runs measures what an on-call engineer receives. Only ``flags`` points alarm.
    """
    out = np.zeros(len(index), dtype=bool)
    scores = np.where(np.asarray(flags, dtype=bool), values, 0.0)
    for incident in find_incidents(index, scores, "", policy):
        out[index.get_loc(incident.start): index.get_loc(incident.end) + 1] = True
    return out


def _alarms_per_series(scores: Mapping[SeriesKey, np.ndarray], policy: AlarmPolicy
                       ) -> dict[SeriesKey, pd.Series]:
    alarms = {}
    for key, values in scores.items():
        series = _SERIES[key]
        values = np.nan_to_num(values, nan=0.0)
        resolved = policy.for_index(series.index)
        flags = values >= resolved.threshold
        flags[: _n_train(len(series))] = False
        alarms[key] = pd.Series(confirmed_alarms(values, flags, series.index, resolved),
                                index=series.index)
    return alarms


def _correlation_alarms(frame: pd.DataFrame, policy: AlarmPolicy
                        ) -> tuple[dict[SeriesKey, pd.Series], dict]:
    """Fit the multi-metric detector per service on the first 20 % of its rows and alarm."""
    from models.correlation import CorrelationDetector  # optional: absent in older trees

    alarms, failures = {}, {}
    for service, rows in frame.groupby(SERVICE, sort=True):
        wide = rows.pivot(index=TIMESTAMP, columns=METRIC, values=VALUE).sort_index()
        cut = _n_train(len(wide))
        resolved = policy.for_index(wide.index)
        try:
            detector = CorrelationDetector().fit(wide.iloc[:cut])
            scores = detector.score(wide)
        except (ValueError, TypeError) as error:
            failures[str(service)] = f"{type(error).__name__}: {error}"
            continue
        for metric in wide.columns:
            key = (str(service), str(metric))
            if key not in _SERIES:
                continue
            index = _SERIES[key].index
            flags = np.zeros(len(index), dtype=bool)
            values = np.zeros(len(index))
            if metric in scores.columns:
                values = np.nan_to_num(scores[metric].reindex(index).to_numpy(), nan=0.0)
                flags = values >= resolved.threshold
                flags &= index >= wide.index[cut]
            alarms[key] = pd.Series(confirmed_alarms(values, flags, index, resolved), index=index)
    return alarms, failures


def _fmt(value: float) -> str:
    return "  - " if math.isnan(value) else f"{value:.2f}"


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _scores_json(scores: EventScores) -> dict:
    return {**dataclasses.asdict(scores), "precision": _finite(scores.precision),
            "recall": _finite(scores.recall), "f1": _finite(scores.f1)}


def _print_tables(reports: dict[str, EventReport], seconds: dict[str, float],
                  incidents: pd.DataFrame, threshold: float) -> None:
    width = max(len(n) for n in [*reports, "detector"]) + 2
    print(f"\nevent-level accuracy at threshold {threshold:g}, alarmed points merged into incidents "
          "as the service pages them (no point-adjustment)")
    print(f"{'detector':<{width}}{'precision':>10}{'recall':>8}{'F1':>7}{'found':>9}"
          f"{'runs':>7}{'false':>7}{'time':>9}")
    for name, report in reports.items():
        o = report.overall
        print(f"{name:<{width}}{_fmt(o.precision):>10}{_fmt(o.recall):>8}{_fmt(o.f1):>7}"
              f"{f'{o.n_found}/{o.n_events}':>9}{o.n_alarm_runs:>7}{report.n_false_runs:>7}"
              f"{seconds[name]:8.1f}s")

    print("\nper incident kind: found/incidents  precision  F1  (precision: that kind's runs "
          "against them plus every false run)")
    cell = max(len(k) for k in INCIDENT_KINDS) + 3
    print(f"{'detector':<{width}}" + "".join(f"{k:>{cell}}" for k in INCIDENT_KINDS))
    for name, report in reports.items():
        cells = []
        for kind in INCIDENT_KINDS:
            s = report.by_kind[kind]
            cells.append(f"{s.n_found}/{s.n_events} {_fmt(s.precision)} {_fmt(s.f1)}")
        print(f"{name:<{width}}" + "".join(f"{c:>{cell}}" for c in cells))

    watched = (incidents["incident"] == WATCHED_KIND).to_numpy()
    print(f"\n{WATCHED_KIND}: incidents found, and by which labelled metric")
    for name, report in reports.items():
        by = [m for m, w in zip(report.found_by, watched, strict=True) if w]
        counts = pd.Series([x for metrics in by for x in metrics]).value_counts()
        detail = ", ".join(f"{m} {n}" for m, n in counts.items()) or "none"
        print(f"{name:<{width}}{sum(1 for m in by if m)}/{len(by)}   ({detail})")


def _print_missed_by_single(reports: dict[str, EventReport], incidents: pd.DataFrame) -> None:
    """Of the watched incidents that no single-metric detector found, how many correlation finds."""
    if CORRELATION not in reports or len(reports) < 2:
        return
    watched = np.flatnonzero((incidents["incident"] == WATCHED_KIND).to_numpy())
    singles = [r for n, r in reports.items() if n != CORRELATION]
    missed = [i for i in watched if not any(r.found_by[i] for r in singles)]
    found = sum(1 for i in missed if reports[CORRELATION].found_by[i])
    names = ", ".join(n for n in reports if n != CORRELATION)
    print(f"{WATCHED_KIND} missed by every single-metric detector run ({names}): {len(missed)}; "
          f"found by correlation: {found}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=8)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--step", default="1min")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-factor", default="2,4",
                        help="LOW,HIGH: how far latency rises in latency_up_cpu_normal "
                             "incidents (default 2,4; 1.3,1.8 makes them subtle)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="a fixed alarm threshold (default: the alarm policy's for the "
                             f"fleet's step, {ALARM_THRESHOLD:g} at 1 minute)")
    parser.add_argument("--min-points", type=int, default=AlarmPolicy().min_points,
                        help="alarmed points an incident needs to page, unless one point is "
                             "lone_point_rarity times rarer than the threshold (default: the "
                             "alarm policy's)")
    parser.add_argument("--retrain-every", default="1D",
                        help="refit every this long on all rows so far, as the nightly job does "
                             "(default 1D, as aiops detect); 'never': fit once")
    parser.add_argument("--merge-gap-s", type=float, default=AlarmPolicy().merge_gap_s,
                        help="alarmed points closer than this are one incident, as the service "
                             "pages them (0: count every run of consecutive points)")
    parser.add_argument("--learn-incident-after-s", type=float,
                        default=AlarmPolicy().learn_incident_after_s,
                        help="a refit leaves out an incident open at its instant until it is "
                             "this old (default: the alarm policy's; 0: refits learn every row)")
    parser.add_argument("--detectors", default=None,
                        help="comma-separated names; default every registered detector but "
                             f"{', '.join(EXCLUDED)}, plus '{COMBINED}' and '{CORRELATION}'")
    parser.add_argument("--no-correlation", action="store_true",
                        help=f"leave out the multi-metric '{CORRELATION}' detector")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="series scored in parallel (default: 2 or the CPU count if lower)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    if args.detectors:
        names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    else:
        names = [n for n in registered_names() if n not in EXCLUDED] + [COMBINED, CORRELATION]
    if args.no_correlation and CORRELATION in names:
        names.remove(CORRELATION)
    unknown = sorted(set(names) - set(registered_names()) - {COMBINED, CORRELATION})
    if unknown:
        sys.exit(f"unknown detector(s) {unknown}; registered: {registered_names()}, "
                 f"'{COMBINED}' and '{CORRELATION}'")

    try:
        low, high = (float(x) for x in args.latency_factor.split(","))
    except ValueError:
        sys.exit(f"--latency-factor {args.latency_factor!r} must be LOW,HIGH such as 1.3,1.8")
    config = FleetConfig(n_services=args.services, days=args.days, step=args.step, seed=args.seed,
                         latency_factor=(low, high))
    started = time.perf_counter()
    frame = generate_fleet(config)
    incidents = incident_table(frame)
    _SERIES.update({key: to_series(rows) for key, rows in split_series(frame)})
    print(f"fleet: {args.services} services × {args.days:g} days at {args.step} (seed {args.seed}): "
          f"{len(_SERIES)} series, {len(frame):,} rows, {len(incidents)} incidents "
          f"({', '.join(f'{k} {n}' for k, n in incidents['incident'].value_counts().items())}); "
          f"generated in {time.perf_counter() - started:.1f} s")
    print(f"fit on the first {TRAIN_FRACTION:.0%} of each series, refitted every "
          f"{args.retrain_every} on all rows so far, scored causally; "
          f"{COMBINED} = geometric mean of the tail probabilities of {', '.join(DEFAULT_DETECTORS)}; {args.jobs} jobs")

    policy = AlarmPolicy(threshold=args.threshold, merge_gap_s=args.merge_gap_s,
                         min_points=args.min_points,
                         learn_incident_after_s=args.learn_incident_after_s)
    retrain_every = None if args.retrain_every == "never" else pd.Timedelta(args.retrain_every)
    reports, seconds, failures = {}, {}, {}
    for name in names:
        t0 = time.perf_counter()
        if name == CORRELATION:
            try:
                alarms, failures[name] = _correlation_alarms(frame, policy)
            except ImportError as error:
                print(f"  {name}: skipped ({error})")
                continue
        else:
            detector_names = DEFAULT_DETECTORS if name == COMBINED else (name,)
            scores, failures[name] = _score_detector(tuple(detector_names), retrain_every,
                                                     args.jobs, policy)
            alarms = _alarms_per_series(scores, policy)
        seconds[name] = time.perf_counter() - t0
        reports[name] = match_incidents(incidents, alarms)
        failed = f"; not scored: {len(failures[name])}" if failures[name] else ""
        print(f"  {name}: {len(alarms)} series in {seconds[name]:.1f} s{failed}")
    _print_tables(reports, seconds, incidents,
                  policy.threshold_at(pd.Timedelta(args.step).total_seconds()))
    _print_missed_by_single(reports, incidents)
    total_s = time.perf_counter() - started
    print(f"\ntotal {total_s:.1f} s")

    watched = (incidents["incident"] == WATCHED_KIND).to_numpy()
    result = {
        "fleet": dataclasses.asdict(config),
        "threshold": policy.threshold_at(pd.Timedelta(args.step).total_seconds()),
        "chance_alarms_per_month": policy.chance_alarms_per_month,
        "merge_gap_s": args.merge_gap_s,
        "min_points": args.min_points,
        "retrain_every": args.retrain_every,
        "learn_incident_after_s": policy.learn_incident_after_s,
        "train_fraction": TRAIN_FRACTION,
        "n_series": len(_SERIES),
        "n_incidents": len(incidents),
        "total_seconds": round(total_s, 2),
        "detectors": {
            name: {
                "seconds": round(seconds[name], 2),
                "overall": _scores_json(report.overall),
                "n_false_runs": report.n_false_runs,
                "by_kind": {k: _scores_json(s) for k, s in report.by_kind.items()},
                WATCHED_KIND: {
                    "n_incidents": int(watched.sum()),
                    "n_found": sum(1 for m, w in zip(report.found_by, watched, strict=True)
                                   if w and m),
                },
                "incidents": [
                    {"service": row.service, "kind": row.incident, "start": row.start.isoformat(),
                     "end": row.end.isoformat(), "metrics": row.metrics, "found_by": found}
                    for row, found in zip(incidents.itertuples(index=False), report.found_by,
                                          strict=True)
                ],
                "not_scored": failures.get(name, {}),
            }
            for name, report in reports.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
