"""``aiops detect`` and ``aiops forecast``: offline runs over a CSV or a dataset, written to
a CSV, without the registry or a server."""

from __future__ import annotations

import argparse
import os

from cli.arguments import alarm_policy, positive_int
from models.bundle import DEFAULT_DETECTORS


def _cmd_detect(args: argparse.Namespace) -> int:
    from features.timeparse import parse_duration
    from training.replay import detect

    retrain_every = None
    if args.retrain_every.strip().lower() != "never":
        try:
            retrain_every = parse_duration(args.retrain_every, name="--retrain-every")
        except ValueError as error:
            raise ValueError(f"{error}; or 'never' to fit once") from None
    policy = alarm_policy(args.alarm_policy)
    replayed = detect(args.input, args.out, detector=args.detector,
                      train_fraction=args.train_fraction, retrain_every=retrain_every,
                      policy=policy if args.pages else None, refit_policy=policy,
                      jobs=args.jobs)
    notes = []
    if replayed.n_repeated:
        notes.append(f"{replayed.n_repeated} rows repeating an earlier timestamp carry its score")
    if replayed.n_late:
        notes.append(f"{replayed.n_late} late rows (earlier than a row before them) not scored")
    if replayed.n_pages is not None:
        low, high = min(replayed.thresholds), max(replayed.thresholds)
        at = f"{low:.10g}" if low == high else f"{low:.10g} to {high:.10g}"
        notes.append(f"{replayed.n_pages} pages at threshold {at}")
    print(f"wrote {replayed.n_rows} scored rows to {args.out}"
          + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    from features.timeparse import parse_timestamp
    from training.forecasting import forecast_file

    until = None
    if args.until is not None:
        try:
            # A time without a zone is UTC here, as the data files' times are.
            until = parse_timestamp(args.until, name="--until", naive="utc").isoformat()
        except ValueError as error:
            raise ValueError(f"--until {args.until!r} is not a timestamp: {error}") from None
    results = forecast_file(args.input, args.out, horizon=args.horizon, until=until,
                            model=args.model)
    for label, result in results:
        print(f"{label}: {result.model} ({result.reason})")
    print(f"wrote {sum(len(r.frame) for _, r in results)} forecast rows to {args.out}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``aiops detect`` and ``aiops forecast``."""
    de = commands.add_parser("detect", help="causal offline replay: a score for every row")
    de.add_argument("input", help="a timestamp,value CSV or a Parquet dataset directory")
    de.add_argument("--out", required=True, help="CSV to write")
    de.add_argument("--detector", help="one detector name (default: the ensemble of "
                    + ", ".join(DEFAULT_DETECTORS) + ")")
    de.add_argument("--train-fraction", type=float, default=0.15,
                    help="share of the rows the first fit sees (default 0.15)")
    de.add_argument("--retrain-every", default="1D",
                    help="refit on all rows so far every this long, as the nightly job does "
                         "in production (a duration such as 1D, 12h or 90m; 'never': fit "
                         "once; default 1D)")
    de.add_argument("--pages", action="store_true",
                    help="add a 'page' column: 1 at the rows where the service would page "
                         "under its alarm policy (once per incident, when it is confirmed)")
    de.add_argument("--alarm-policy", metavar="FILE",
                    help="the alarm policy of --pages and of the refits (which leave out an "
                         "incident it is paging), a JSON file as AIOPS_ALARM_POLICY takes "
                         "(default: AIOPS_ALARM_POLICY if set, else the default policy)")
    de.add_argument("--jobs", type=positive_int, default=min(2, os.cpu_count() or 1),
                    help="processes the refits run in (default: 2, or 1 on one CPU); the "
                         "scores do not depend on it")
    de.set_defaults(func=_cmd_detect)

    fc = commands.add_parser("forecast", help="forecast the steps after a history, with quantiles")
    fc.add_argument("input", help="a timestamp,value CSV or a Parquet dataset directory")
    fc.add_argument("--horizon", type=int, required=True, help="steps to forecast")
    fc.add_argument("--out", required=True, help="CSV to write: timestamp,yhat,q10,q50,q90")
    fc.add_argument("--until", help="fit on the history up to this time: RFC 3339, Unix seconds "
                                    "or relative to now (-1d); no zone means UTC (default: all)")
    fc.add_argument("--model", default="auto",
                    help="auto (default: chosen by backtest, the median of all unless one is "
                         "clearly better), seasonal_naive, arima, random_forest, "
                         "median_ensemble or lstm")
    fc.set_defaults(func=_cmd_forecast)
