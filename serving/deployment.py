"""The Ray Serve deployment: one replica loads the model once and serves the FastAPI app."""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve import Application

from serving.app import create_app, score_request
from serving.loader import ModelHolder, ModelWatcher, start_model
from serving.observability import configure_logging
from serving.schemas import ScoreRequest, ScoreResponse
from serving.settings import Settings

_log = logging.getLogger(__name__)


@serve.deployment(name="aiops", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
@serve.ingress()
class AiopsIngress:
    """Loads ``models:/<name>@<alias>`` when the replica starts, follows the alias, serves the app."""

    def __init__(self, settings: Settings) -> None:
        configure_logging()
        self.settings = settings
        self.holder = ModelHolder(start_model(settings))
        # A new champion is picked up within settings.reload_interval_s, without a restart.
        self.watcher = ModelWatcher(settings, self.holder)
        self.watcher.start()

    def __serve_build_asgi_app__(self):
        return create_app(self.settings, holder=self.holder, watcher=self.watcher,
                          batch_scorer=self.score)

    async def score(self, request: ScoreRequest, url: str) -> ScoreResponse:
        """One request, scored in a batch with those that arrive within a few milliseconds."""
        result = await self._score_batch((request, url))
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _score_batch(
        self, items: list[tuple[ScoreRequest, str]]
    ) -> list[ScoreResponse | Exception]:
        """Score a batch in one worker thread; each request keeps its own error."""
        model = self.holder.require()  # one version for the whole batch

        def work() -> list[ScoreResponse | Exception]:
            out: list[ScoreResponse | Exception] = []
            for request, url in items:
                try:
                    out.append(score_request(request, model, self.settings, url))
                except Exception as error:
                    out.append(error)
            return out

        return await asyncio.to_thread(work)


def build_app(settings: Settings) -> Application:
    """The Serve application for ``serve.run``."""
    if settings.num_replicas:
        return AiopsIngress.options(num_replicas=settings.num_replicas).bind(settings)
    return AiopsIngress.options(autoscaling_config=autoscaling_config(settings)).bind(settings)


def autoscaling_config(settings: Settings) -> dict[str, object]:
    """Replicas follow the requests in flight: about 8 per replica, between 1 and the maximum.

    Scale-up reacts within seconds; scale-down waits a minute so that a burst does not
    restart replicas (each loads the model, which takes seconds).
    """
    return {"min_replicas": 1, "max_replicas": settings.max_replicas,
            "target_ongoing_requests": 8, "upscale_delay_s": 5, "downscale_delay_s": 60}


def run(settings: Settings, *, blocking: bool = False) -> None:
    """Start Serve's HTTP proxy on ``settings.host:port`` and deploy the app."""
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings), name="aiops", route_prefix="/", blocking=blocking)


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
