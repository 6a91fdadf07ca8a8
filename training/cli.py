"""The ``aiops`` command line: data, train, retrain, promote, rollback, models, detect, forecast, serve.

User-facing output goes to stdout; errors are one line on stderr naming what
is wrong, with exit code 1 (bad input or state) or 2 (bad usage).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from features.schema import DataValidationError
from models.bundle import DEFAULT_DETECTORS

_log = logging.getLogger("aiops")


# -- data -------------------------------------------------------------------------------
def _cmd_synth(args: argparse.Namespace) -> int:
    from features.store import write_dataset
    from features.synth import FleetConfig, generate_fleet, incident_table

    config = FleetConfig(n_services=args.services, days=args.days, step=args.step, seed=args.seed)
    frame = generate_fleet(config)
    n_rows = write_dataset(frame, args.out, existing="replace")
    incidents = incident_table(frame)
    print(f"wrote {n_rows} rows, {frame.groupby(['service', 'metric']).ngroups} series and "
          f"{len(incidents)} labelled incidents to {args.out}")
    return 0


def _cmd_import_csv(args: argparse.Namespace) -> int:
    from features.csv_files import label_windows, load_windows, read_value_csv, windows_for
    from features.store import write_dataset

    windows = load_windows(args.windows) if args.windows else None
    total = 0
    for path in args.files:
        frame = read_value_csv(path, service=args.service, metric=args.metric,
                               duplicates=args.on_duplicate)
        if windows is not None:
            spans = windows_for(path, windows)
            if spans is None:
                _log.warning("%s has no entry in %s: imported without labels", path, args.windows)
            else:
                frame = label_windows(frame, spans)
        total += write_dataset(frame, args.out, existing="replace")
        print(f"{path}: {len(frame)} rows as {frame['service'].iloc[0]}/{frame['metric'].iloc[0]}")
    print(f"imported {total} rows from {len(args.files)} file(s) into {args.out}")
    return 0


def _prometheus_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The options of a Prometheus source, shared by ``data import-prometheus`` and ``retrain``."""

    def step(text: str) -> float:
        from features.prometheus import parse_step

        try:
            return parse_step(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parser.add_argument("--query", action="append", default=[], metavar="PROMQL",
                        help="PromQL to import; NAME=PROMQL stores its series as metric NAME "
                             "(needed when the result has no __name__, e.g. rate(...)); repeat "
                             "for more queries")
    parser.add_argument("--step", type=step, required=required, default=None if required else 60.0,
                        help="resolution: 10s, 1m, 1m30s, 5min or seconds"
                             + ("" if required else " (default 1m)"))
    parser.add_argument("--labels-config", metavar="FILE",
                        help="JSON or YAML: service_labels (default [service, job, app]), "
                             "metric_label (default __name__), keep_labels (default false), "
                             "queries (NAME: PROMQL, added to --query)")
    parser.add_argument("--timeout", type=_duration_argument("timeout"), default=30.0,
                        metavar="S", help="seconds (or a duration such as 1m) to wait for each "
                                          "Prometheus answer (default 30)")
    parser.add_argument("--on-infinite", choices=["gap", "error"], default="gap",
                        help="+Inf/-Inf values: store as gaps, counted (default), or refuse")


def _duration_argument(name: str) -> Callable[[str], float]:
    """An argparse type: seconds from any spelling of :func:`features.timeparse.parse_seconds`."""

    def parse(text: str) -> float:
        from features.timeparse import parse_seconds

        try:
            return parse_seconds(text, name=name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _time_argument(name: str):
    """An argparse type: a UTC time from :func:`features.timeparse.parse_timestamp`, zone required."""

    def parse(text: str):
        from features.timeparse import parse_timestamp

        try:
            return parse_timestamp(text, name=name)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _prometheus_source(args: argparse.Namespace):
    """The queries, label rule and request options of the command line and ``--labels-config``."""
    from features.prometheus import LabelRule, PromQuery
    from training.nightly import PrometheusSource

    rule, queries = LabelRule(), [PromQuery.parse(q) for q in args.query]
    if args.labels_config:
        settings = _read_config(args.labels_config)
        configured = settings.pop("queries", None) or {}
        if isinstance(configured, dict):
            queries += [PromQuery(expr=str(expr), name=str(name))
                        for name, expr in configured.items()]
        elif isinstance(configured, list):
            queries += [PromQuery.parse(str(q)) for q in configured]
        else:
            raise ValueError(f"{args.labels_config}: queries must map names to PromQL or list "
                             f"PromQL, got {type(configured).__name__}")
        rule = LabelRule.from_mapping(settings, source=str(args.labels_config))
    if not queries:
        raise ValueError("no query: pass --query PROMQL (or queries in --labels-config)")
    return PrometheusSource(url=args.prometheus_url, queries=tuple(queries), step=args.step,
                            rule=rule, timeout_s=args.timeout, on_infinite=args.on_infinite)


def _read_config(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yml", ".yaml")):
        try:
            import yaml  # mlflow depends on PyYAML
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write "
                             f"the file as JSON") from None

        try:
            settings = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from None
    else:
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); YAML files end in .yml or "
                             f".yaml") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(settings).__name__}")
    return settings


def _print_import(report) -> None:
    for line in report.summary():
        print(line)


def _cmd_import_prometheus(args: argparse.Namespace) -> int:
    from features.prometheus import PrometheusImportError, import_prometheus

    source = _prometheus_source(args)
    try:
        report = import_prometheus(source.url, source.queries, args.out, start=args.start,
                                   end=args.end, step=source.step, rule=source.rule,
                                   timeout_s=source.timeout_s, on_infinite=source.on_infinite)
    except PrometheusImportError as error:
        print(f"aiops data: error: {error}", file=sys.stderr)
        return 1
    _print_import(report)
    return 0


def _cmd_sample_request(args: argparse.Namespace) -> int:
    from features.series import split_series, to_series
    from features.store import list_series, read_dataset

    pairs = list_series(args.data)
    if not pairs:
        raise ValueError(f"dataset {args.data} holds no series")
    service, metric = pairs[0] if not args.service else (args.service, args.metric)
    frame = read_dataset(args.data, service=service, metric=metric)
    (_, rows), = list(split_series(frame))
    window = to_series(rows).iloc[-args.points:]
    body = {
        "series": [{
            "service": service,
            "metric": metric,
            "timestamps": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in window.index],
            "values": [None if v != v else round(float(v), 6) for v in window.to_numpy()],
        }]
    }
    if args.spike:
        # Make one obviously abnormal point so the sample answer shows an anomaly.
        values = body["series"][0]["values"]
        finite = [v for v in values if v is not None]
        values[-10] = max(finite) * 3 + 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(body))
    print(f"wrote a {len(window)}-point window of {service}/{metric} to {args.out}")
    return 0


# -- train / detect -----------------------------------------------------------------------
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


def _wait_for_routes(settings, timeout_s: float = 15.0) -> None:
    """Wait until the ingress routes to the app: a replica answers 404 to every path until it
    knows its route, for a moment after ``serve.run`` returns."""
    import httpx

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "", "*") else settings.host
    url = f"http://{host}:{settings.port}/readyz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code != 404:
                return
        time.sleep(0.2)


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

    if not args.nightly:
        raise ValueError("retrain runs as the nightly job only: pass --nightly "
                         "(use `aiops train` for a one-off run)")
    try:
        day = dt.date.fromisoformat(args.day) if args.day else None
    except ValueError:
        raise ValueError(f"--day {args.day!r} is not a date such as 2026-11-27") from None
    # The nightly job runs without a terminal: its progress goes to the log.
    logging.getLogger("training").setLevel(logging.INFO)
    source = _prometheus_source(args) if args.prometheus_url else None
    if source is None and (args.query or args.labels_config):
        raise ValueError("--query and --labels-config need --prometheus URL")
    started = time.perf_counter()
    try:
        outcome = retrain_nightly(_train_options(args), days=args.days, day=day,
                                  force=args.force, source=source)
    except NightlyLockedError as error:
        print(f"aiops retrain: error: {error}", file=sys.stderr)
        return 3
    except PrometheusImportError as error:
        print(f"aiops retrain: error: {error}", file=sys.stderr)
        return 1
    if outcome.imported is not None:
        _print_import(outcome.imported)
    print(f"nightly {outcome.day}: {outcome.message}")
    if outcome.result is not None:
        _print_result(outcome.result, time.perf_counter() - started)
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from training.promotion import set_champion
    from training.tracking import configure_tracking

    configure_tracking()
    move = set_champion(args.model_name, args.version, action="promote", reason=args.reason,
                        by=args.by)
    print(f"{args.model_name}: champion is now version {move.version} (was "
          f"{move.previous or 'none'}); by {move.by} at {move.at}: {move.reason}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from training.promotion import rollback
    from training.tracking import configure_tracking

    configure_tracking()
    move = rollback(args.model_name, reason=args.reason, by=args.by)
    print(f"{args.model_name}: rolled back to version {move.version} (was {move.previous}); "
          f"by {move.by} at {move.at}: {move.reason}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from training.promotion import model_versions
    from training.tracking import configure_tracking

    configure_tracking()
    for row in model_versions(args.model_name):
        aliases = ",".join(row["aliases"]) or "-"
        print(f"{row['version']:>4}  {aliases:<22} {row['created']}  run {row['run_id']}  "
              f"{row['promotion']}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from features.timeparse import parse_duration
    from training.replay import detect

    retrain_every = None
    if args.retrain_every.strip().lower() != "never":
        try:
            retrain_every = parse_duration(args.retrain_every, name="--retrain-every")
        except ValueError as error:
            raise ValueError(f"{error}; or 'never' to fit once") from None
    n_rows = detect(args.input, args.out, detector=args.detector,
                    train_fraction=args.train_fraction, retrain_every=retrain_every)
    print(f"wrote {n_rows} scored rows to {args.out}")
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


# -- serve --------------------------------------------------------------------------------
#: Seconds from SIGTERM to the end of the process, at most: within Kubernetes' default 30 s
#: grace period (drain, replicas finishing their requests, Serve and Ray stopping).
STOP_DEADLINE_S = 28.0


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cmd_serve(args: argparse.Namespace) -> int:
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from serving.deployment import configure_ingress, run, runtime_folder
    from serving.loader import start_model
    from serving.settings import Settings

    folder = runtime_folder()
    try:
        settings = Settings.from_env(host=args.host, port=args.port, model_name=args.model_name,
                                     model_alias=args.alias, drain_file=folder / "draining")
        if settings.tokens is None and not _is_loopback(settings.host) and not args.insecure_open:
            raise ValueError(
                f"refusing to serve an open API on {settings.host}: no tokens are configured, "
                f"so anyone who reaches the port could score, promote and reload. Set "
                f"AIOPS_TOKENS_FILE (see `aiops token new`), serve on 127.0.0.1, or pass "
                f"--insecure-open if the network in front of it authenticates callers")
        ingress = "HAProxy" if configure_ingress(settings, folder) else "Ray's Python proxy"
        stopping, hurry = threading.Event(), threading.Event()

        def on_signal(*_) -> None:
            (hurry if stopping.is_set() else stopping).set()

        # Load the model here, while Ray starts, to fail with a clear message rather than in
        # a replica that Serve keeps restarting; when the registry failed this load (seconds
        # at most, see serving.loader), the replicas start from the cache.
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(start_model, settings)
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
            try:
                loaded = loading.result()
            except BaseException:
                ray.shutdown()
                raise
        if loaded.source != "registry":
            settings = settings.replace(start_from_cache=True)
        # Ray installs handlers of its own; ours go after, so SIGTERM and Ctrl-C drain.
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, on_signal)
        if not stopping.is_set():
            run(settings)
            _wait_for_routes(settings)
            url = f"http://{settings.host}:{settings.port}"
            print(f"NovaEvo AIOps ready at {url} serving {loaded.name} version "
                  f"{loaded.version} ({len(loaded.bundle.series)} series; ingress: {ingress})",
                  flush=True)
            if loaded.source != "registry":
                print(f"  warning: {loaded.source}", flush=True)
            if settings.tokens is None:
                print("  warning: no tokens configured: the API is open to whoever reaches "
                      "the port", flush=True)
            if args.sample_request:
                print(f"  try: curl -s -X POST {url}/v1/score -H 'content-type: "
                      f"application/json' -d @{args.sample_request}", flush=True)
            print(f"  docs: {url}/docs   health: {url}/healthz   stop: Ctrl-C", flush=True)
            stopping.wait()
        _stop_within_deadline(settings, hurry)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # Everything is stopped and flushed; Python's own teardown of Ray's core worker would
    # take several seconds more (measured 6-7 s here) for nothing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop_within_deadline(settings, hurry: threading.Event) -> None:
    """Drain and stop (:func:`serving.deployment.stop`); past the deadline, exit at once.

    A second SIGTERM or Ctrl-C ends the drain early. Exiting hard loses nothing the
    kernel does not clean: Ray's processes and HAProxy die with this one.
    """
    from serving.deployment import stop

    started = time.monotonic()
    print(f"stopping: /readyz answers 503; serving {settings.drain_s:g} s more, then "
          f"finishing the requests in flight", flush=True)

    def overdue() -> None:
        print(f"stopping took over {STOP_DEADLINE_S:g} s: exiting now", file=sys.stderr,
              flush=True)
        os._exit(1)

    timer = threading.Timer(STOP_DEADLINE_S, overdue)
    timer.daemon = True
    timer.start()
    stop(settings, skip_drain=hurry)
    timer.cancel()
    print(f"stopped in {time.monotonic() - started:.1f} s", flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _cmd_watch(args: argparse.Namespace) -> int:
    from serving.live import LiveConfig
    from serving.loader import ModelHolder, ModelWatcher, start_model
    from serving.schemas import AlertOut
    from serving.settings import Settings
    from serving.watch import Watcher

    config = LiveConfig.load(args.config)
    data = config.model_dump()
    if args.prometheus:
        data["prometheus"]["url"] = args.prometheus
    if args.interval is not None:
        data["interval_s"] = args.interval
    config = LiveConfig.model_validate(data)
    settings = Settings.from_env(model_name=args.model_name, model_alias=args.alias)
    holder = ModelHolder(start_model(settings))
    model = holder.require()
    print(f"watching {len(config.series)} series every {config.interval_s:g} s with "
          f"{model.name} version {model.version} ({model.source})", flush=True)
    post = None
    if args.dry_run:
        def post(alerts):
            for alert in alerts:
                print(json.dumps(AlertOut(**vars(alert)).model_dump(mode="json")), flush=True)
    watcher = Watcher(config, holder, settings, alertmanager_url=args.alertmanager, post=post)
    # A new champion is picked up between cycles, as the service does.
    follower = ModelWatcher(settings, holder)
    follower.start()
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())

    def show(report) -> None:
        print(report.summary(), flush=True)
        for name, reason in report.failed.items():
            print(f"  {name}: {reason}", flush=True)

    reports = watcher.run(args.cycles, on_cycle=show, stop=stop)
    follower.stop()
    # A bounded run where no cycle could tell Alertmanager anything failed.
    return 1 if args.cycles is not None and all(r.post_error for r in reports) else 0


def _cmd_token(args: argparse.Namespace) -> int:
    from serving.security import new_token

    token, entry = new_token(args.name, args.roles.split(","))
    print(f"token (give it to {args.name}; it is shown only now):\n  {token}")
    print("entry for AIOPS_TOKENS_FILE (a JSON list of such entries):")
    print("  " + json.dumps(entry))
    return 0


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="Parquet dataset directory")
    parser.add_argument("--detectors", default=",".join((*DEFAULT_DETECTORS, "correlation")),
                        help="comma-separated detector names (correlation: per service, "
                        "multi-metric); default: %(default)s")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--model-name", default="novaevo-detectors")
    parser.add_argument("--forecast-horizon", type=int, default=288,
                        help="steps ahead the forecasters are backtested on and serve at most "
                             "(default 288; 0: no forecasters)")
    parser.add_argument("--forecasters", default="seasonal_naive,arima,random_forest",
                        help="forecasters compared by backtest per series (their median too); "
                             "lstm is available but slower to train; default: %(default)s")
    parser.add_argument("--gate", help="JSON file of promotion rules (default: holdout event F1 "
                        "of the combined score and forecast MASE, no tolerance)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiops", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="create or import metric datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = data_commands.add_parser("synth", help="generate a labelled synthetic fleet")
    synth.add_argument("--out", required=True, help="dataset directory to write")
    synth.add_argument("--services", type=int, default=4)
    synth.add_argument("--days", type=float, default=14.0)
    synth.add_argument("--step", default="1m",
                       help="sampling step, 1 s to 1 h, e.g. 10s, 1m, 1m30s, 5min or seconds")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_cmd_synth)

    imp = data_commands.add_parser("import-csv", help="import timestamp,value CSV files")
    imp.add_argument("files", nargs="+", help="CSV files with a 'timestamp,value' header")
    imp.add_argument("--out", required=True, help="dataset directory to write into")
    imp.add_argument("--windows", help="NAB-style JSON of anomaly windows per file")
    imp.add_argument("--service", help="service name (default: the file's folder name)")
    imp.add_argument("--metric", help="metric name (default: the file's stem)")
    imp.add_argument("--on-duplicate", choices=["error", "first", "last", "mean"], default="error",
                     help="rows that repeat a timestamp: refuse (default) or keep one")
    imp.set_defaults(func=_cmd_import_csv)

    ip = data_commands.add_parser(
        "import-prometheus", help="import series from Prometheus' query_range API (resumes)",
        description="Fetch PromQL queries over [start, end] at a step, in chunks of at most "
                    "11,000 points, and append the points after each series' last stored "
                    "timestamp. service = the first of the labels service, job, app; metric = "
                    "the query's NAME or __name__. Nothing is written unless every request "
                    "succeeds.")
    ip.add_argument("--url", dest="prometheus_url", required=True,
                    help="Prometheus base URL, e.g. http://prometheus:9090")
    ip.add_argument("--start", type=_time_argument("--start"), required=True,
                    help="RFC 3339 (2026-11-27T00:00:00Z), Unix seconds, or relative to now: "
                         "-2h, now-2h")
    ip.add_argument("--end", type=_time_argument("--end"), default=None,
                    help="as --start (default: now)")
    ip.add_argument("--out", required=True, help="dataset directory to append to")
    _prometheus_arguments(ip, required=True)
    ip.set_defaults(func=_cmd_import_prometheus)

    sample = data_commands.add_parser("sample-request", help="write a /v1/score request body")
    sample.add_argument("--data", required=True)
    sample.add_argument("--out", required=True)
    sample.add_argument("--points", type=int, default=360)
    sample.add_argument("--service")
    sample.add_argument("--metric")
    sample.add_argument("--spike", action="store_true", help="plant one abnormal point")
    sample.set_defaults(func=_cmd_sample_request)

    tr = commands.add_parser("train", help="fit detectors and forecasters, register, gate")
    _training_arguments(tr)
    tr.set_defaults(func=_cmd_train)

    rt = commands.add_parser("retrain", help="the nightly job: last N days, train, gate, promote")
    _training_arguments(rt)
    rt.add_argument("--nightly", action="store_true", help="run as the nightly job (required)")
    rt.add_argument("--days", type=float, default=14.0,
                    help="days of data before midnight UTC of the run's day (default 14)")
    rt.add_argument("--day", help="the run's day, YYYY-MM-DD (default: today, UTC)")
    rt.add_argument("--force", action="store_true",
                    help="train even when a run for the day has finished")
    rt.add_argument("--prometheus", dest="prometheus_url", metavar="URL",
                    help="first import the day's window from this Prometheus into --data "
                         "(resuming after each series' last stored point), then train")
    _prometheus_arguments(rt, required=False)
    rt.set_defaults(func=_cmd_retrain)

    pr = commands.add_parser("promote", help="make a registered version the champion")
    pr.add_argument("version")
    pr.add_argument("--reason", required=True, help="why, recorded with who and when")
    pr.add_argument("--by", help="who (default: the login name)")
    pr.add_argument("--model-name", default="novaevo-detectors")
    pr.set_defaults(func=_cmd_promote)

    rb = commands.add_parser("rollback", help="put back the champion the current one replaced")
    rb.add_argument("--reason", required=True, help="why, recorded with who and when")
    rb.add_argument("--by", help="who (default: the login name)")
    rb.add_argument("--model-name", default="novaevo-detectors")
    rb.set_defaults(func=_cmd_rollback)

    ls = commands.add_parser("models", help="list registered versions, their aliases and promotion")
    ls.add_argument("--model-name", default="novaevo-detectors")
    ls.set_defaults(func=_cmd_models)

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

    tk = commands.add_parser("token", help="API tokens")
    tk_commands = tk.add_subparsers(dest="token_command", required=True)
    tn = tk_commands.add_parser("new", help="make a bearer token and its hashed entry")
    tn.add_argument("--name", required=True, help="who or what uses it, e.g. alerting-engine")
    tn.add_argument("--roles", required=True, help="comma-separated: score, forecast, admin")
    tn.set_defaults(func=_cmd_token)

    wa = commands.add_parser(
        "watch", help="score live windows from Prometheus and post alerts to Alertmanager",
        description="Every interval, read the configured series' last window from Prometheus, "
                    "score it with the champion and post firing and resolved alerts to "
                    "Alertmanager's /api/v2/alerts, each change once (see serving/watch.py).")
    wa.add_argument("--config", required=True, help="live config YAML (deploy/live.yaml)")
    wa.add_argument("--prometheus", help="Prometheus base URL (overrides the config's)")
    wa.add_argument("--alertmanager", help="Alertmanager base URL (overrides the config's)")
    wa.add_argument("--interval", type=_duration_argument("interval"),
                    help="seconds (or a duration such as 5m) between cycles (overrides; >= 1)")
    wa.add_argument("--cycles", type=_positive_int, help="stop after this many cycles")
    wa.add_argument("--dry-run", action="store_true",
                    help="print the alerts as JSON lines instead of posting them")
    wa.add_argument("--model-name")
    wa.add_argument("--alias")
    wa.set_defaults(func=_cmd_watch)

    se = commands.add_parser("serve", help="serve the champion model over HTTP with Ray Serve")
    se.add_argument("--host", default="127.0.0.1")
    se.add_argument("--port", type=int, default=8000)
    se.add_argument("--model-name")
    se.add_argument("--alias")
    se.add_argument("--num-cpus", type=int, default=None)
    se.add_argument("--sample-request", help="request body file to show in the ready line")
    se.add_argument("--insecure-open", action="store_true",
                    help="serve without tokens on a non-loopback host (refused otherwise)")
    se.set_defaults(func=_cmd_serve)
    return parser


#: Options whose value may start with a minus: a time before now such as ``-1h``.
_TIME_OPTIONS = frozenset({"--start", "--end", "--until"})


def _attach_time_values(argv: Sequence[str]) -> list[str]:
    """``--start -1h`` as ``--start=-1h``.

    argparse takes any word that starts with ``-`` (and is not a plain negative number)
    for an option, so ``--start -1h`` would be "expected one argument". A word after a time
    option that starts with a minus and a digit cannot be an option: it is that option's
    value, and is attached to it before parsing.
    """
    words = list(argv)
    attached: list[str] = []
    while words:
        word = words.pop(0)
        if word in _TIME_OPTIONS and words and re.match(r"-\d", words[0]):
            word = f"{word}={words.pop(0)}"
        attached.append(word)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_attach_time_values(sys.argv[1:] if argv is None else argv))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    # LookupError: serving.loader.ModelUnavailableError, caught without importing MLflow here.
    except (DataValidationError, ValueError, TypeError, FileNotFoundError, LookupError) as error:
        print(f"aiops {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
