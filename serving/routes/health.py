"""Probes (``/healthz``, ``/readyz``) and the service's own metrics (``/metrics``).

Two routers, because the API lists ``/metrics`` after the capacity routes: the order in
which :func:`serving.app.create_app` includes them is the order of ``/openapi.json``.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.bundle import FALLBACK_DETECTOR
from serving.problems import responses
from serving.routes.deps import App

probes = APIRouter()
metrics = APIRouter()


@probes.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probes.get("/readyz", summary="A model is loaded and requests can be scored",
            responses=responses(503))
def readyz(shared: App) -> dict[str, object]:
    settings = shared.settings
    if settings.drain_file is not None and settings.drain_file.exists():
        raise HTTPException(503, "stopping: draining the requests in flight; send new "
                                 "ones elsewhere")
    loaded = shared.holder.require()
    return {
        "status": "ready",
        "auth": "bearer tokens" if settings.tokens is not None else "disabled (open API)",
        "model": {"name": loaded.name, "version": loaded.version, "alias": loaded.alias},
        "model_source": loaded.source,
        "seconds_since_reload": round(time.time() - loaded.loaded_at, 1),
        "reload_interval_s": settings.reload_interval_s,
        "last_reload_error": shared.holder.last_error,
        "n_series": len(loaded.bundle.series),
        "detectors": loaded.bundle.detector_names,
        "unseen_series": f"scored by {FALLBACK_DETECTOR}",
    }


@metrics.get("/metrics", summary="The service's own metrics, Prometheus text format",
             response_class=PlainTextResponse)
def prometheus_metrics(shared: App) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(shared.metrics.registry)
                             + shared.verdicts.sink.render(), media_type=CONTENT_TYPE_LATEST)
