"""NAB benchmark: every detector's NAB score on a folder of the Numenta Anomaly Benchmark.

Usage::

    .venv/bin/python benchmarks/nab.py --nab ../shared/data/nab [--out benchmarks/results/nab.json]
        [--detectors static_threshold,dynamic_threshold,combined] [--jobs 2]

For every CSV under ``NAB/data/*/`` and every registered detector (but the
window baseline, which needs no training and serves unseen series), plus the
combined score of ``aiops detect``'s default detectors, runs ``aiops detect``
in-process (fit on the first 15 %, causal replay of every row), then scores
the replay with :mod:`models.nab` against the windows of
``NAB/combined_windows.json``, two ways:

* **as deployed** (the headline): the pages the alarm policy sends, at its own
  threshold (``aiops detect --pages``); no label is used to choose anything;
* **tuned**: one threshold per detector and profile swept over the whole corpus
  (NAB's own procedure, for comparison with published detectors; the labels
  choose it), and the per-folder scores at that same threshold.

Prints the tables and the time taken per detector, and writes everything as
JSON. A benchmark, not a test: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from features.csv_files import load_windows, windows_for
from models import registered_names
from models.alarms import AlarmPolicy
from models.nab import (
    PROFILES,
    FileScore,
    ScoredFile,
    onset_alarms,
    probation_length,
    score_file,
    sweep_onset_threshold,
    sweep_threshold,
)
from training.replay import detect

COMBINED = "combined"
#: Scores unseen series from their own window; it is not trained, so not benchmarked here.
EXCLUDED = ("window_baseline",)
PROFILE_LABELS = {"standard": "standard", "reward_low_fp": "low FP", "reward_low_fn": "low FN"}
DEFAULT_OUT = Path("benchmarks/results/nab.json")
_ZERO = FileScore(raw=0.0, null=0.0, perfect=0.0, n_windows=0, n_tp=0, n_fn=0, n_fp=0)


Replay = tuple[np.ndarray, np.ndarray, np.ndarray]


def _replay(task: tuple[str, str | None, float, str | None, AlarmPolicy]
            ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Run ``aiops detect --pages`` on one file: its timestamps (ns, UTC), scores and pages
    under ``policy``, one per row."""
    path, detector, train_fraction, retrain_every, policy = task
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "scores.csv"
        detect(path, out, detector=detector, train_fraction=train_fraction,
               retrain_every=None if retrain_every == "never" else pd.Timedelta(retrain_every),
               policy=policy)
        rows = pd.read_csv(out, usecols=["timestamp", "anomaly_score", "page"])
    stamps = pd.to_datetime(rows["timestamp"], utc=True, format="mixed")
    return (path, stamps.to_numpy(dtype="datetime64[ns]"), rows["anomaly_score"].to_numpy(float),
            rows["page"].to_numpy(dtype=bool))


def _files(nab: Path) -> list[Path]:
    files = sorted((nab / "data").glob("*/*.csv"))
    if not files:
        sys.exit(f"no CSV files under {nab}/data/*/; is --nab the folder holding data/?")
    return files


def _windows(nab: Path, files: Sequence[Path]) -> dict[Path, list]:
    labels_path = nab / "combined_windows.json"
    if not labels_path.is_file():
        sys.exit(f"{labels_path} not found; NAB windows are needed to score")
    labels = load_windows(labels_path)
    windows = {}
    for path in files:
        spans = windows_for(path, labels)
        if spans is None:
            print(f"  {path.parent.name}/{path.name} has no entry in {labels_path.name}; skipped")
            continue
        # Windows are compared with naive UTC timestamps (datetime64), like the replay's rows.
        windows[path] = [(s.tz_convert(None).to_datetime64(), e.tz_convert(None).to_datetime64())
                         for s, e in spans]
    return windows


def _run_detector(
    name: str, files: Sequence[Path], train_fraction: float, retrain_every: str | None, jobs: int,
    deployed: AlarmPolicy,
) -> tuple[dict[Path, Replay], float]:
    detector = None if name == COMBINED else name
    tasks = [(str(path), detector, train_fraction, retrain_every, deployed) for path in files]
    started = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_replay, tasks))
    else:
        results = [_replay(task) for task in tasks]
    seconds = time.perf_counter() - started
    return {Path(path): (stamps, scores, pages) for path, stamps, scores, pages in results}, seconds


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _evaluate(
    replays: dict[Path, Replay],
    windows: dict[Path, list],
    merge_gap: pd.Timedelta | None,
    policy: AlarmPolicy,
) -> dict[str, dict]:
    """Per profile: the score as deployed, and tuned (threshold, overall, per folder).

    As deployed: the pages ``aiops detect --pages`` marked. Tuned: with ``merge_gap``,
    alarms are incident onsets confirmed as ``policy`` does; without, every row at or
    above the swept threshold is an alarm.
    """
    corpus = {
        path: ScoredFile(stamps, scores, windows[path], probation_length(len(stamps)))
        for path, (stamps, scores, _) in replays.items()
    }
    pages = {path: paged for path, (_, _, paged) in replays.items()}

    def alarms(f: ScoredFile, threshold: float) -> np.ndarray:
        if merge_gap is None:
            return f.scores >= threshold
        return onset_alarms(f.timestamps, f.scores, threshold, merge_gap, policy)

    results = {}
    for profile_name, profile in PROFILES.items():
        if merge_gap is None:
            best = sweep_threshold(list(corpus.values()), profile)
        else:
            best = sweep_onset_threshold(list(corpus.values()), profile, merge_gap=merge_gap,
                                         policy=policy)
        per_file = {
            path: score_file(f.timestamps, alarms(f, best.threshold), f.windows, profile,
                             f.probation_rows)
            for path, f in corpus.items()
        }
        folders: dict[str, FileScore] = {}
        for path, result in per_file.items():
            folder = path.parent.name
            folders[folder] = folders[folder] + result if folder in folders else result
        total = sum(per_file.values(), start=_ZERO)
        as_deployed = {
            path: score_file(f.timestamps, pages[path], f.windows, profile, f.probation_rows)
            for path, f in corpus.items()
        }
        results[profile_name] = {
            "threshold": best.threshold,
            "overall": total,
            "as_deployed": sum(as_deployed.values(), start=_ZERO),
            "as_deployed_files": as_deployed,
            "folders": dict(sorted(folders.items())),
            "files": per_file,
        }
    return results


def _policy_threshold(policy: AlarmPolicy) -> str:
    if policy.threshold is not None:
        return f"{policy.threshold:g}"
    return (f"{policy.threshold_at(300.0):g} at NAB's 5-minute step, from "
            f"{policy.chance_alarms_per_month:g} chance alarms per series per month")


def _as_json(score: FileScore) -> dict:
    return {"normalised": _finite(score.normalised), "raw": _finite(score.raw),
            "null": score.null, "perfect": score.perfect, "n_windows": score.n_windows,
            "n_tp": score.n_tp, "n_fn": score.n_fn, "n_fp": score.n_fp}


def _cell(score: FileScore) -> str:
    if score.n_windows == 0:  # NAB's normalisation is undefined; every alarm here is wrong
        return f"{score.n_fp} FP"
    return f"{score.normalised:6.1f}"


def _print_tables(results: dict[str, dict], seconds: dict[str, float],
                  deployed: AlarmPolicy) -> None:
    names = list(results)
    width = max(len(n) for n in [*names, "detector"]) + 2
    print("\nNAB score (0 = never alarms, 100 = perfect); as deployed: the pages of the alarm "
          f"policy at its threshold ({_policy_threshold(deployed)}); tuned: one threshold per "
          "detector and profile, swept over the corpus")
    print(f"{'':<{width}}{'as deployed':>30}{'tuned':>30}")
    header = (f"{'detector':<{width}}"
              + "".join(f"{PROFILE_LABELS[p]:>10}" for p in PROFILES) * 2)
    print(header + f"{'pages':>7}{'TP':>5}{'FP':>5}{'time':>10}")
    for name in names:
        entry = results[name]
        cells = "".join(f"{entry[p]['as_deployed'].normalised:10.1f}" for p in PROFILES)
        cells += "".join(f"{entry[p]['overall'].normalised:10.1f}" for p in PROFILES)
        standard = entry["standard"]["as_deployed"]
        counts = f"{standard.n_tp + standard.n_fp:>7}{standard.n_tp:>5}{standard.n_fp:>5}"
        print(f"{name:<{width}}{cells}{counts}{seconds[name]:9.1f}s")
    print("(pages, TP, FP: as deployed, standard profile, outside the probationary rows)")

    folders = list(next(iter(results.values()))["standard"]["folders"])
    for profile_name, profile in PROFILES.items():
        print(f"\nprofile {profile_name} (A_TP={profile.tp_weight:g}, A_FN={profile.fn_weight:g}, "
              f"A_FP={profile.fp_weight:g}); per folder at the corpus-wide threshold")
        columns = ["threshold", "all", *folders, "TP", "FN", "FP", "deployed"]
        widths = [10, 7, *(max(len(f), 7) + 2 for f in folders), 5, 5, 7, 9]
        print(f"{'detector':<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
        for name in names:
            entry = results[name][profile_name]
            overall = entry["overall"]
            threshold = "never" if math.isinf(entry["threshold"]) else f"{entry['threshold']:.6g}"
            cells = [threshold, f"{overall.normalised:.1f}",
                     *(_cell(entry["folders"][f]) for f in folders),
                     str(overall.n_tp), str(overall.n_fn), str(overall.n_fp),
                     f"{entry['as_deployed'].normalised:.1f}"]
            print(f"{name:<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, required=True,
                        help="folder holding data/*/ and combined_windows.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--detectors", default=None,
                        help="comma-separated names; default every registered detector but "
                             f"{', '.join(EXCLUDED)}, plus '{COMBINED}'")
    parser.add_argument("--train-fraction", type=float, default=0.15)
    parser.add_argument("--retrain-every", default="1D",
                        help="refit every this long, as the nightly job does (default 1D, "
                             "as aiops detect); 'never': fit once")
    parser.add_argument("--alarms", choices=["onset", "points"], default="onset",
                        help="onset (default): only the first point of each incident alarms, "
                             "as the service pages; points: every point at the threshold")
    parser.add_argument("--merge-gap-s", type=float, default=AlarmPolicy().merge_gap_s,
                        help="alarmed points closer than this are one incident (onset mode)")
    parser.add_argument("--min-points", type=int, default=AlarmPolicy().min_points,
                        help="alarmed points an incident needs to page, unless one point is "
                             "lone_point_rarity times rarer than the threshold (onset mode; "
                             "default: the alarm policy's)")
    parser.add_argument("--alarm-policy", type=Path, metavar="FILE",
                        help="the policy of the as-deployed figure, a JSON file as "
                             "AIOPS_ALARM_POLICY takes (default: the shipped default policy)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="files replayed in parallel (default: 2 or the CPU count if lower)")
    args = parser.parse_args()
    # aiops detect warns, per file and per detector, about the two NAB files that repeat
    # timestamps; one note below says it once.
    logging.disable(logging.WARNING)

    if args.detectors:
        names = [n.strip() for n in args.detectors.split(",") if n.strip()]
    else:
        names = [n for n in registered_names() if n not in EXCLUDED] + [COMBINED]
    unknown = sorted(set(names) - set(registered_names()) - {COMBINED})
    if unknown:
        sys.exit(f"unknown detector(s) {unknown}; registered: {registered_names()} and '{COMBINED}'")

    files = _files(args.nab)
    windows = _windows(args.nab, files)
    files = [f for f in files if f in windows]
    n_windows = sum(len(w) for w in windows.values())
    policy = AlarmPolicy(merge_gap_s=args.merge_gap_s, min_points=args.min_points)
    deployed = AlarmPolicy.from_file(args.alarm_policy) if args.alarm_policy else AlarmPolicy()
    print(f"as deployed: {'the policy of ' + str(args.alarm_policy) if args.alarm_policy else 'the default alarm policy'} "
          f"(threshold {_policy_threshold(deployed)}, merge gap {deployed.merge_gap_s:g} s, "
          f"{deployed.min_points} points or one {deployed.lone_point_rarity:g} times rarer)")
    if args.alarms == "onset":
        print(f"tuned alarms: one per incident (merge gap {args.merge_gap_s:g} s), when confirmed: "
              f"once it holds {args.min_points} alarmed point(s), or at a point "
              f"{policy.lone_point_rarity:g} times rarer than the threshold")
    else:
        print("tuned alarms: every point at the threshold")
    print(f"NAB: {len(files)} files in {len({f.parent.name for f in files})} folders, "
          f"{n_windows} windows, from {args.nab}; detectors {', '.join(names)}; {args.jobs} jobs")

    results, seconds = {}, {}
    started = time.perf_counter()
    for name in names:
        replays, seconds[name] = _run_detector(name, files, args.train_fraction,
                                               args.retrain_every, args.jobs, deployed)
        merge_gap = pd.Timedelta(seconds=args.merge_gap_s) if args.alarms == "onset" else None
        results[name] = _evaluate(replays, windows, merge_gap, policy)
        print(f"  {name}: detect over {len(files)} files in {seconds[name]:.1f} s")
    repeats = {f"{p.parent.name}/{p.name}": int(pd.Index(stamps).duplicated().sum())
               for p, (stamps, _, _) in replays.items()}
    repeats = {k: v for k, v in repeats.items() if v}
    if repeats:
        print("  note: rows repeating a timestamp carry the score of the first (aiops detect): "
              + ", ".join(f"{k} ({v} rows)" for k, v in repeats.items()))
    _print_tables(results, seconds, deployed)
    total_s = time.perf_counter() - started
    print(f"\ntotal {total_s:.1f} s")

    report = {
        "nab": str(args.nab),
        "n_files": len(files),
        "n_windows": n_windows,
        "train_fraction": args.train_fraction,
        "retrain_every": args.retrain_every,
        "as_deployed_policy": {"file": str(args.alarm_policy) if args.alarm_policy else None,
                               "threshold": deployed.threshold,
                               "chance_alarms_per_month": deployed.chance_alarms_per_month,
                               "threshold_at_5min": deployed.threshold_at(300.0),
                               "merge_gap_s": deployed.merge_gap_s,
                               "min_points": deployed.min_points,
                               "lone_point_rarity": deployed.lone_point_rarity},
        "alarms": args.alarms,
        "merge_gap_s": args.merge_gap_s if args.alarms == "onset" else None,
        "min_points": args.min_points if args.alarms == "onset" else None,
        "profiles": {n: {"tp_weight": p.tp_weight, "fn_weight": p.fn_weight,
                         "fp_weight": p.fp_weight} for n, p in PROFILES.items()},
        "total_seconds": round(total_s, 2),
        "detectors": {
            name: {
                "seconds": round(seconds[name], 2),
                "profiles": {
                    profile: {
                        # None: never alarming was best.
                        "threshold": _finite(entry["threshold"]),
                        **_as_json(entry["overall"]),
                        "folders": {f: _as_json(s) for f, s in entry["folders"].items()},
                        "as_deployed": _as_json(entry["as_deployed"]),
                        "as_deployed_files": {f"{p.parent.name}/{p.name}": _as_json(s)
                                              for p, s in entry["as_deployed_files"].items()},
                        "files": {f"{p.parent.name}/{p.name}": _as_json(s)
                                  for p, s in entry["files"].items()},
                    }
                    for profile, entry in results[name].items()
                },
            }
            for name in names
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
