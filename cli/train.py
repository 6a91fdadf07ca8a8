"""``aiops train`` and ``aiops retrain``: fit, register, gate; the nightly job.

Both run under :func:`_stoppable`, so that a SIGTERM from cron or Kubernetes
ends the MLflow run as ``KILLED`` and stops the Ray the command started.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cli.arguments import alarm_policy
from cli.data import print_import, prometheus_arguments, prometheus_source
from models.backtest import DEFAULT_FORECASTERS
from models.bundle import DEFAULT_DETECTORS
from registry import DEFAULT_MODEL_NAME


def _train_options(args: argparse.Namespace):
    from training.promotion import DEFAULT_GATE, load_gate
    from training.train import TrainOptions

    return TrainOptions(
        data=Path(args.data),
        detectors=tuple(args.detectors.split(",")),
        holdout_fraction=args.holdout_fraction,
        model_name=args.model_name,
        progress=not args.quiet,
        forecast_horizon=args.forecast_horizon,
        gate=load_gate(args.gate) if args.gate else DEFAULT_GATE,
        forecasters=tuple(args.forecasters.split(",")),
    )


#: Short-history notes printed after a training run; the run's JSON artifacts hold them all.
_MAX_NOTES = 10


def _print_result(result, seconds: float) -> None:
    print(f"run {result.run_id}: registered {result.model_name} version {result.version}"
          f"{' as champion' if result.champion else ' as challenger'} in {seconds:.1f}s")
    print(f"  promotion: {result.decision}")
    for key in sorted(k for k in result.metrics
                      if k.endswith("event_f1") or (k.startswith("holdout.forecast.")
                                                    and "mase" in k)):
        print(f"  {key} = {result.metrics[key]:.3f}")
    notes = [*result.failures.values(), *result.partial.values()]
    for note in notes[:_MAX_NOTES]:
        print(f"  {note}")
    if len(notes) > _MAX_NOTES:
        print(f"  ... and {len(notes) - _MAX_NOTES} more series with too short a history (see "
              f"failures.json and partial.json in the run)")


def _stoppable(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a training command so that SIGTERM or SIGINT stop it in order.

    The run in progress ends ``KILLED`` (see :mod:`training.runs`), the Ray the
    command started is shut down (stopped or not), and the exit status is 128 + the
    signal's number, as a shell reports.
    """
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from training.signals import Stopped, stop_on_signals

        had_ray = _ray_running()
        try:
            with stop_on_signals():
                return command(args)
        except Stopped as stop:
            print(f"aiops {args.command}: {stop}; the run in progress is marked KILLED",
                  file=sys.stderr)
            return 128 + stop.signum
        finally:
            # Also when stopped while Ray starts: ray.init has started processes by then.
            if not had_ray and "ray" in sys.modules:
                from training.fleet import shutdown_ray

                shutdown_ray()

    return run


def _ray_running() -> bool:
    """Whether this process is connected to Ray (without importing it)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@_stoppable
def _cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    started = time.perf_counter()
    result = train(_train_options(args))
    _print_result(result, time.perf_counter() - started)
    return 0


@_stoppable
def _cmd_retrain(args: argparse.Namespace) -> int:
    import datetime as dt

    from features.prometheus import PrometheusImportError
    from training.nightly import NightlyLockedError, retrain_nightly

    try:
        day = dt.date.fromisoformat(args.day) if args.day else None
    except ValueError:
        raise ValueError(f"--day {args.day!r} is not a date such as 2026-11-27") from None
    # The nightly job runs without a terminal: its progress goes to the log.
    logging.getLogger("training").setLevel(logging.INFO)
    source = prometheus_source(args) if args.prometheus_url else None
    if source is None and (args.query or args.labels_config):
        raise ValueError("--query and --labels-config need --prometheus URL")
    started = time.perf_counter()
    try:
        options = dataclasses.replace(_train_options(args),
                                      alarm_policy=alarm_policy(args.alarm_policy))
        outcome = retrain_nightly(options, days=args.days, day=day, force=args.force,
                                  source=source)
    except NightlyLockedError as error:
        print(f"aiops retrain: error: {error}", file=sys.stderr)
        return 3
    except PrometheusImportError as error:
        print(f"aiops retrain: error: {error}", file=sys.stderr)
        return 1
    if outcome.imported is not None:
        print_import(outcome.imported)
    print(f"nightly {outcome.day}: {outcome.message}")
    if outcome.result is not None:
        _print_result(outcome.result, time.perf_counter() - started)
    return 0


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="Parquet dataset directory")
    parser.add_argument("--detectors", default=",".join((*DEFAULT_DETECTORS, "correlation")),
                        help="comma-separated detector names (correlation: per service, "
                        "multi-metric); default: %(default)s")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--forecast-horizon", type=int, default=288,
                        help="steps ahead the forecasters are backtested on and serve at most "
                             "(default 288; 0: no forecasters)")
    # The models package's default, so that `aiops train` and a TrainOptions() agree.
    parser.add_argument("--forecasters", default=",".join(DEFAULT_FORECASTERS),
                        help="forecasters compared by backtest per series (their median too); "
                             "lstm is available but slower to train; default: %(default)s")
    parser.add_argument("--gate", help="JSON file of promotion rules (default: holdout event F1 "
                        "of the combined score and forecast MASE, no tolerance)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``aiops train`` and ``aiops retrain``."""
    tr = commands.add_parser("train", help="fit detectors and forecasters, register, gate")
    _training_arguments(tr)
    tr.set_defaults(func=_cmd_train)

    rt = commands.add_parser("retrain", help="the nightly job: last N days, train, gate, promote")
    _training_arguments(rt)
    # Once required; retrain has no other mode. Still accepted so that the cron jobs and
    # deploy manifests that pass it keep working.
    rt.add_argument("--nightly", action="store_true",
                    help="accepted and ignored: retrain always runs as the nightly job (kept "
                         "for existing cron jobs and manifests)")
    rt.add_argument("--days", type=float, default=14.0,
                    help="days of data before midnight UTC of the run's day (default 14)")
    rt.add_argument("--day", help="the run's day, YYYY-MM-DD (default: today, UTC)")
    rt.add_argument("--force", action="store_true",
                    help="train even when a run for the day has finished")
    rt.add_argument("--alarm-policy", metavar="FILE",
                    help="the alarm policy under which the incident the champion is paging "
                         "is not learnt, a JSON file as AIOPS_ALARM_POLICY takes (default: "
                         "AIOPS_ALARM_POLICY if set, else the default policy)")
    rt.add_argument("--prometheus", dest="prometheus_url", metavar="URL",
                    help="first import the day's window from this Prometheus into --data "
                         "(resuming after each series' last stored point), then train")
    prometheus_arguments(rt, required=False)
    rt.set_defaults(func=_cmd_retrain)
