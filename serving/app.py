"""The HTTP API as a plain FastAPI app: ``create_app(settings, model)`` runs with or without Ray.

The routes live in :mod:`serving.routes` (one router per concern), the scoring and
planning they call in :mod:`serving.scoring` and :mod:`serving.planning`, the mapping of
errors to answers in :mod:`serving.problems`. This module puts them together: the shared
parts every route reaches (:class:`~serving.routes.deps.Services`), the body-size limit, and
one middleware that gives every request an id, counts and times it for ``/metrics`` and
logs it as one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request

from models.score_cache import ScoreCache
from serving import problems
from serving.loader import LoadedModel, ModelHolder, ModelWatcher
from serving.observability import (
    BodyLimit,
    ServiceMetrics,
    VerdictMetrics,
    VerdictRecorder,
    VerdictSink,
)
from serving.routes import admin, capacity, forecast, health, score
from serving.routes.deps import BatchScorer, Services
from serving.security import AuditLog, request_id
from serving.settings import Settings

_log = logging.getLogger(__name__)
_access = logging.getLogger("serving.access")


def _endpoint(request: Request) -> str:
    """The route's path template (bounded label values), or "unmatched"."""
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


def create_app(settings: Settings, model: LoadedModel | None = None,
               holder: ModelHolder | None = None,
               watcher: ModelWatcher | None = None,
               batch_scorer: BatchScorer | None = None,
               verdict_sink: VerdictSink | None = None) -> FastAPI:
    """The API over ``model`` (or over whatever ``holder`` holds, for hot swaps).

    ``watcher`` serves ``POST /v1/admin/reload``; without one, a reload is a 409.
    ``batch_scorer`` scores ``/v1/score`` requests (the Serve deployment groups
    concurrent ones with ``@serve.batch``); without one, each is scored in a thread.
    ``verdict_sink`` keeps the verdicts ``/metrics`` exports (the Serve deployment passes
    one shared by its replicas); without one, this app keeps its own.
    """
    holder = holder or ModelHolder(model, ScoreCache(settings.score_cache_bytes))
    app = FastAPI(
        title="NovaEvo AIOps",
        version="0.1.0",
        description="Anomaly scores for metric windows, from detectors trained per series; "
                    "forecasts and capacity recommendations.",
    )
    metrics = ServiceMetrics(
        lambda: time.time() - holder.model.loaded_at if holder.model else float("nan"),
        holder.score_cache.stats)
    app.state.services = Services(
        settings=settings, holder=holder, metrics=metrics,
        verdicts=VerdictRecorder(verdict_sink or VerdictMetrics(
            settings.max_exported_series, settings.max_exported_series_per_caller)),
        audit=AuditLog(settings.audit_log), watcher=watcher, batch_scorer=batch_scorer)
    if settings.tokens is None:
        _log.warning("no tokens configured (AIOPS_TOKENS_FILE, AIOPS_TOKENS): the API is open")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def _request_id(request: Request, call_next: Callable):
        request.state.request_id = request_id(request.headers.get("x-request-id"))
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            response = problems.problem(413, f"request body of {length} bytes; at most "
                                             f"{settings.max_body_bytes} accepted", request)
        else:
            response = await call_next(request)
        seconds = time.perf_counter() - started
        endpoint = _endpoint(request)
        metrics.observe_request(endpoint, request.method, response.status_code, seconds)
        if holder.model is not None:
            metrics.set_model(holder.model.name, holder.model.version, holder.model.alias)
        response.headers["x-request-id"] = request.state.request_id
        _access.info("%s %s %d", request.method, endpoint, response.status_code, extra={
            "request_id": request.state.request_id, "endpoint": endpoint,
            "status": response.status_code, "duration_ms": round(seconds * 1000, 2),
            "principal": getattr(request.state, "principal", None)})
        return response

    problems.install(app)
    # The order of /openapi.json's paths.
    for router in (health.probes, score.router, forecast.router, capacity.router,
                   health.metrics, admin.router):
        app.include_router(router)
    return app
