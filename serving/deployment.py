"""The Ray Serve deployment: one replica loads the model once and serves the FastAPI app."""

from __future__ import annotations

import logging

from ray import serve
from ray.serve import Application

from serving.app import create_app
from serving.loader import ModelHolder, ModelWatcher, start_model
from serving.observability import configure_logging
from serving.settings import Settings

_log = logging.getLogger(__name__)


@serve.deployment(name="aiops", ray_actor_options={"num_cpus": 0.5})
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
        return create_app(self.settings, holder=self.holder, watcher=self.watcher)


def build_app(settings: Settings) -> Application:
    """The Serve application for ``serve.run``."""
    return AiopsIngress.options(num_replicas=settings.num_replicas).bind(settings)


def run(settings: Settings, *, blocking: bool = False) -> None:
    """Start Serve's HTTP proxy on ``settings.host:port`` and deploy the app."""
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings), name="aiops", route_prefix="/", blocking=blocking)


def app_builder(args: dict[str, str]) -> Application:
    """Entry point for ``serve run`` / ``serve deploy`` (see ``deploy/serve_config.yaml``).

    ``args`` override the environment: ``model_name``, ``model_alias``,
    ``tracking_uri``, ``cache_dir``, ``num_replicas``.
    """
    overrides: dict[str, object] = dict(args)
    if "num_replicas" in overrides:
        overrides["num_replicas"] = int(str(overrides["num_replicas"]))
    return build_app(Settings.from_env(**overrides))
