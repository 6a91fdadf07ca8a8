"""``aiops data``: create or import metric datasets (synth, import-csv, import-prometheus,
sample-request).

The Prometheus source options are defined here, where the importer is, and
reused by ``aiops retrain --prometheus``, which imports the day's window first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cli.arguments import duration_argument, time_argument

_log = logging.getLogger("aiops")


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


def prometheus_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
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
    parser.add_argument("--timeout", type=duration_argument("timeout"), default=30.0,
                        metavar="S", help="seconds (or a duration such as 1m) to wait for each "
                                          "Prometheus answer (default 30)")
    parser.add_argument("--on-infinite", choices=["gap", "error"], default="gap",
                        help="+Inf/-Inf values: store as gaps, counted (default), or refuse")


def prometheus_source(args: argparse.Namespace):
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


def print_import(report) -> None:
    """What an import wrote, one line per series and totals (also after ``retrain``'s import)."""
    for line in report.summary():
        print(line)


def _cmd_import_prometheus(args: argparse.Namespace) -> int:
    from features.prometheus import PrometheusImportError, import_prometheus

    source = prometheus_source(args)
    try:
        report = import_prometheus(source.url, source.queries, args.out, start=args.start,
                                   end=args.end, step=source.step, rule=source.rule,
                                   timeout_s=source.timeout_s, on_infinite=source.on_infinite)
    except PrometheusImportError as error:
        print(f"aiops data: error: {error}", file=sys.stderr)
        return 1
    print_import(report)
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


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``aiops data`` and its subcommands."""
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
    ip.add_argument("--start", type=time_argument("--start"), required=True,
                    help="RFC 3339 (2026-11-27T00:00:00Z), Unix seconds, or relative to now: "
                         "-2h, now-2h")
    ip.add_argument("--end", type=time_argument("--end"), default=None,
                    help="as --start (default: now)")
    ip.add_argument("--out", required=True, help="dataset directory to append to")
    prometheus_arguments(ip, required=True)
    ip.set_defaults(func=_cmd_import_prometheus)

    sample = data_commands.add_parser("sample-request", help="write a /v1/score request body")
    sample.add_argument("--data", required=True)
    sample.add_argument("--out", required=True)
    sample.add_argument("--points", type=int, default=360)
    sample.add_argument("--service")
    sample.add_argument("--metric")
    sample.add_argument("--spike", action="store_true", help="plant one abnormal point")
    sample.set_defaults(func=_cmd_sample_request)
