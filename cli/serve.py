"""``aiops serve``, ``aiops watch`` and ``aiops token``: the service, the live watcher and
its credentials.

``serve`` owns the process's end: SIGTERM drains the replicas within Kubernetes'
grace period, then the process exits without Python's slow teardown of Ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from cli.arguments import duration_argument, positive_int

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


def _wait_for_routes(settings, timeout_s: float = 15.0, in_a_row: int = 3) -> None:
    """Wait until the app itself answers ``/readyz``, ``in_a_row`` times running.

    For a moment after ``serve.run`` returns, HAProxy has no replica to send to (its 503),
    then a replica answers 404 to every path until it knows its route; HAProxy spreads
    requests over what it sends to, so one good answer can be followed by a 404.
    """
    import httpx

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "", "*") else settings.host
    url = f"http://{host}:{settings.port}/readyz"
    deadline = time.monotonic() + timeout_s
    good = 0
    while time.monotonic() < deadline and good < in_a_row:
        try:
            good = good + 1 if httpx.get(url, timeout=2).status_code == 200 else 0
        except httpx.HTTPError:
            good = 0
        time.sleep(0.2)


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


def _cmd_watch(args: argparse.Namespace) -> int:
    from models.score_cache import ScoreCache
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
    holder = ModelHolder(start_model(settings), ScoreCache(settings.score_cache_bytes))
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


def add_commands(commands: argparse._SubParsersAction) -> None:
    """``aiops token``, ``aiops watch`` and ``aiops serve``."""
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
    wa.add_argument("--interval", type=duration_argument("interval"),
                    help="seconds (or a duration such as 5m) between cycles (overrides; >= 1)")
    wa.add_argument("--cycles", type=positive_int, help="stop after this many cycles")
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
