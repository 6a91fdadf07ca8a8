"""The HTTP API as a plain FastAPI app: ``create_app(settings, model)`` runs with or without Ray.

Errors are mapped in one place: bad input → 422 (413 past the size limits),
no or wrong token → 401 / 403, no model yet → 503, anything else → 500 with
a request id and no internals. Every request is counted and timed for
``/metrics`` and logged as one line with its request id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mlflow.exceptions import MlflowException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from features.prometheus import PrometheusImportError
from features.series import infer_step
from models.alarms import AlarmPolicy, Incident, find_incidents
from models.base import ModelFormatError, NotFittedError
from models.bundle import FALLBACK_DETECTOR, SeriesForecast, SeriesScores
from models.capacity import (
    ScalingPolicy,
    ScheduledEvent,
    ServiceNeed,
    cluster_plan,
    plan_replicas,
    right_size,
)
from models.correlation import CorrelationDetector
from models.forecast import FORECAST_COLUMNS
from serving import registry
from serving.alerts import series_alerts, service_alerts
from serving.loader import LoadedModel, ModelHolder, ModelWatcher
from serving.observability import (
    BodyLimit,
    ServiceMetrics,
    VerdictMetrics,
    VerdictRecorder,
    VerdictSink,
)
from serving.schemas import (
    AdminModelsResponse,
    AdminPromoteRequest,
    AdminReloadResponse,
    AlertOut,
    AllocationOut,
    Anomaly,
    ClusterPlanRequest,
    ClusterPlanResponse,
    ForecastRequest,
    ForecastResponse,
    History,
    IncidentOut,
    ModelInfo,
    Problem,
    RecommendationRequest,
    RecommendationResponse,
    ReplicaCount,
    RightSizingOut,
    RightSizingRequest,
    RightSizingResponse,
    ScheduleStep,
    ScoreRequest,
    ScoreResponse,
    SeriesResult,
    SeriesWindow,
    ServiceIncidentOut,
)
from serving.security import ANONYMOUS, AuditLog, Principal, request_id
from serving.settings import Settings

_log = logging.getLogger(__name__)
_access = logging.getLogger("serving.access")
_bearer = HTTPBearer(auto_error=False, description="A token with the endpoint's role")


class PayloadTooLargeError(ValueError):
    """A request beyond the configured size limits."""


def _round(x: float) -> float:
    return float(round(float(x), 6))


def _reason(value: float, low: float, high: float, detector_scores: dict[str, float]) -> str:
    loudest = max(detector_scores, key=detector_scores.get)
    if value > high:
        where = f"above the expected range [{low:.4g}, {high:.4g}]"
    elif value < low:
        where = f"below the expected range [{low:.4g}, {high:.4g}]"
    else:
        where = f"inside the expected range [{low:.4g}, {high:.4g}] but unusual"
    return f"value {value:.4g} is {where}; {loudest} scores {detector_scores[loudest]:.3f}"


def series_result(window: SeriesWindow, scored: SeriesScores, policy: AlarmPolicy) -> SeriesResult:
    anomalies = []
    reasons = {}
    for i in scored.anomalous(policy.threshold):
        by_detector = {name: _round(s[i]) for name, s in scored.detector_scores.items()}
        value = float(scored.values[i])
        low, high = float(scored.expected_low[i]), float(scored.expected_high[i])
        reasons[int(i)] = _reason(value, low, high, by_detector)
        anomalies.append(
            Anomaly(
                timestamp=window.timestamps[i],
                value=value,
                score=_round(scored.score[i]),
                expected_low=_round(low),
                expected_high=_round(high),
                detectors=by_detector,
                reason=reasons[int(i)],
            )
        )
    incidents = [
        IncidentOut(
            start=incident.start.to_pydatetime(),
            end=incident.end.to_pydatetime(),
            n_points=incident.n_points,
            peak_at=window.timestamps[incident.peak_position],
            peak_score=_round(incident.peak_score),
            peak_value=float(scored.values[incident.peak_position]),
            severity=incident.severity,
            reason=f"{incident.n_points} alarmed point(s) of {window.metric}; at the peak "
            + reasons[incident.peak_position],
        )
        for incident in find_incidents(scored.index, scored.score, window.metric, policy)
    ]
    # round() on Python floats: a tenth of the cost of numpy scalars, and the same digits.
    scores = [None if s != s else round(s, 6) for s in scored.score.tolist()]
    return SeriesResult(
        service=window.service,
        metric=window.metric,
        known_series=scored.known_series,
        detectors=sorted(scored.detector_scores),
        scores=scores,
        anomalies=anomalies,
        incidents=incidents,
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def to_pandas(window: History) -> pd.Series:
    # Whole microseconds since the epoch (a datetime holds no finer): over twice as fast as
    # pandas parsing the list of datetimes, which is a good part of scoring a window.
    micros = np.fromiter(((t - _EPOCH) // _MICROSECOND for t in window.timestamps),
                         dtype="int64", count=len(window.timestamps))
    index = pd.DatetimeIndex(micros * 1000, tz=dt.UTC).as_unit("ns")
    values = np.array([np.nan if v is None else v for v in window.values], dtype="float64")
    return pd.Series(values, index=index)


def from_pandas(series: pd.Series) -> dict[str, list]:
    """The ``timestamps`` and ``values`` of a request window (NaN as ``null``)."""
    return {"timestamps": list(series.index.to_pydatetime()),
            "values": [None if v != v else v for v in series.tolist()]}


def check_limits(request: ScoreRequest, settings: Settings) -> None:
    if len(request.series) > settings.max_series_per_request:
        raise PayloadTooLargeError(
            f"series has {len(request.series)} windows; at most {settings.max_series_per_request} "
            "per request"
        )
    for i, window in enumerate(request.series):
        if len(window.values) > settings.max_points_per_series:
            raise PayloadTooLargeError(
                f"series[{i}] has {len(window.values)} points; at most "
                f"{settings.max_points_per_series} per series"
            )


def _model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(name=model.name, version=model.version, alias=model.alias)


def _forecast(service: str, metric: str, horizon: int, history: History | None,
              model: LoadedModel, settings: Settings) -> SeriesForecast:
    """The bundle's forecast of one series, from the request's history if any."""
    values = None
    if history is not None:
        if len(history.values) > settings.max_points_per_series:
            raise PayloadTooLargeError(
                f"history has {len(history.values)} points; at most "
                f"{settings.max_points_per_series}"
            )
        values = to_pandas(history)
        _check_grid(service, metric, values, model, settings)
    try:
        return model.bundle.forecast(service, metric, horizon, values)
    except pd.errors.OutOfBoundsDatetime:
        start = "the training data" if values is None else values.index[-1].isoformat()
        raise ValueError(f"{service}/{metric}: horizon={horizon} steps after {start} run past "
                         f"{pd.Timestamp.max:%Y-%m-%d}, the last timestamp supported; ask for "
                         "fewer steps") from None
    except ValueError as error:
        raise ValueError(f"{service}/{metric}: {error}") from error


def _check_grid(service: str, metric: str, values: pd.Series, model: LoadedModel,
                settings: Settings) -> None:
    """Refuse a history whose regular grid (forecasters regrid it) would be mostly gaps.

    The grid has a step every trained step (or the history's median spacing) from the first
    timestamp to the last; it may hold ten times the points a request may send.
    """
    if len(values) < 2:
        return
    step = model.bundle.trained_step(service, metric) or infer_step(values.index)
    steps = int((values.index[-1] - values.index[0]) / step) + 1
    limit = 10 * settings.max_points_per_series
    if steps > limit:
        raise PayloadTooLargeError(
            f"{service}/{metric}: history spans {steps:,} steps of {step.total_seconds():g} s for "
            f"{len(values)} points; at most {limit:,} (10 × the points a series may have): "
            "send the recent past, evenly spaced")


def forecast_request(request: ForecastRequest, model: LoadedModel,
                     settings: Settings, verdicts: VerdictRecorder | None = None) -> ForecastResponse:
    result = _forecast(request.service, request.metric, request.horizon, request.history,
                       model, settings)
    if verdicts is not None:
        verdicts.record_forecast(request.service, request.metric, result.frame)
    return ForecastResponse(
        model=_model_info(model),
        service=request.service,
        metric=request.metric,
        forecaster=result.forecaster,
        known_series=result.known_series,
        note=result.note,
        timestamps=list(result.frame.index.to_pydatetime()),
        **{column: [_round(v) for v in result.frame[column]] for column in FORECAST_COLUMNS},
    )


def recommend(request: RecommendationRequest, model: LoadedModel,
              settings: Settings, verdicts: VerdictRecorder | None = None) -> RecommendationResponse:
    policy = ScalingPolicy(
        capacity_per_replica=request.capacity_per_replica,
        target_utilisation=request.target_utilisation,
        peak_utilisation=request.peak_utilisation,
        min_replicas=request.min_replicas, max_replicas=request.max_replicas,
        lead_time_s=request.lead_time_s, stabilisation_s=request.stabilisation_s,
        priority=request.priority)
    forecast = _forecast(request.service, request.metric, request.horizon, request.history,
                         model, settings)
    events = [ScheduledEvent(pd.Timestamp(e.start).tz_convert("UTC"),
                             pd.Timestamp(e.end).tz_convert("UTC"), e.multiplier)
              for e in request.events]
    plan = plan_replicas(forecast.frame, policy, request.current_replicas, events)
    if verdicts is not None:
        verdicts.record_forecast(request.service, request.metric, forecast.frame)
        verdicts.record_replicas(request.service, plan.replicas_now)
    schedule = plan.schedule
    return RecommendationResponse(
        model=_model_info(model), service=request.service, replicas=plan.replicas_now,
        reason=plan.reason, forecaster=forecast.forecaster, note=forecast.note,
        schedule=[ScheduleStep(timestamp=t, replicas=int(r), expected_utilisation=_round(u),
                               demand=_round(d))
                  for t, r, u, d in zip(schedule.index.to_pydatetime(), schedule["replicas"],
                                        schedule["utilisation"], schedule["demand"], strict=True)],
    )


def plan_cluster(request: ClusterPlanRequest) -> ClusterPlanResponse:
    needs = [ServiceNeed(s.service, s.priority, s.needed_replicas, s.min_replicas,
                         s.cpu_per_replica) for s in request.services]
    allocations = cluster_plan(needs, request.total_cpu)
    used = sum(a.cpu for a in allocations)
    wanted = sum(n.needed_replicas * n.cpu_per_replica for n in needs)
    return ClusterPlanResponse(
        allocations=[AllocationOut(**dataclasses.asdict(a)) for a in allocations],
        cpu_used=_round(used), cpu_short=_round(max(wanted - request.total_cpu, 0.0)))


def size_resources(request: RightSizingRequest) -> RightSizingResponse:
    sized = [right_size(i.service, i.resource, np.asarray(i.usage), i.current_request,
                        price_per_unit=i.price_per_unit) for i in request.items]
    return RightSizingResponse(
        recommendations=[RightSizingOut(**dataclasses.asdict(r)) for r in sized],
        under_used=[f"{r.service}/{r.resource}" for r in sized if r.under_used],
        total_saving=_round(sum(r.saving for r in sized)))


def service_incidents(
    service: str,
    windows: dict[str, pd.Series],
    single_scores: dict[str, pd.Series],
    detector: CorrelationDetector,
    policy: AlarmPolicy,
) -> list[ServiceIncidentOut]:
    """Multi-metric incidents of one service, overlapping ones merged into one."""
    wide = pd.concat(windows, axis=1)
    residuals = detector.residuals(wide)
    expected = detector.expected(wide)
    found = []
    for metric, scores in detector.score(wide).items():
        for incident in find_incidents(wide.index, scores.to_numpy(), metric, policy):
            found.append((metric, incident))
    found.sort(key=lambda item: item[1].start)
    merged: list[list[tuple[str, Incident]]] = []
    gap = pd.Timedelta(seconds=policy.merge_gap_s)
    for item in found:
        if merged and item[1].start <= max(i.end for _, i in merged[-1]) + gap:
            merged[-1].append(item)
        else:
            merged.append([item])
    out = []
    for group in merged:
        # The metric that strays furthest from its prediction is the one to name; calibrated
        # scores saturate at 1 and cannot tell.
        metric, peak = max(
            group, key=lambda item: abs(float(residuals[item[0]][item[1].peak_position]))
        )
        at = peak.peak_position
        siblings = {
            name: float(series.iloc[at]) if at < len(series) else float("nan")
            for name, series in single_scores.items()
            if name != metric
        }
        diagnosis = detector.diagnose(metric, float(residuals[metric][at]), siblings,
                                      policy.threshold)
        severity = min((i.severity for _, i in group), key=lambda s: int(s[1]))
        out.append(
            ServiceIncidentOut(
                service=service,
                metrics=sorted({m for m, _ in group}),
                start=min(i.start for _, i in group).to_pydatetime(),
                end=max(i.end for _, i in group).to_pydatetime(),
                peak_at=peak.peak_at.to_pydatetime(),
                peak_metric=metric,
                peak_score=_round(peak.peak_score),
                peak_value=float(wide[metric].iloc[at]),
                expected_value=_round(expected[metric][at]),
                severity=severity,
                diagnosis=diagnosis.text,
            )
        )
    return out


def score_request(request: ScoreRequest, model: LoadedModel, settings: Settings,
                  generator_url: str = "/v1/score") -> ScoreResponse:
    check_limits(request, settings)
    policy = settings.alarm_policy
    if request.threshold is not None:
        policy = dataclasses.replace(policy, threshold=request.threshold)
    seen: dict[tuple[str, str], int] = {}
    for i, window in enumerate(request.series):
        key = (window.service, window.metric)
        if key in seen:
            raise ValueError(
                f"series[{i}] repeats {window.service}/{window.metric} of series[{seen[key]}]; "
                "send each series once per request"
            )
        seen[key] = i
    windows: dict[str, dict[str, pd.Series]] = {}
    single_scores: dict[str, dict[str, pd.Series]] = {}
    results = []
    for i, window in enumerate(request.series):
        key = (window.service, window.metric)
        wanted = request.detectors
        if wanted and key not in model.bundle:
            wanted = None  # an unseen series only has the window baseline
        values = to_pandas(window)
        try:
            scored = model.bundle.score(window.service, window.metric, values, wanted)
        except ValueError as error:
            raise ValueError(f"series[{i}] ({window.service}/{window.metric}): {error}") from error
        results.append(series_result(window, scored, policy))
        windows.setdefault(window.service, {})[window.metric] = values
        single_scores.setdefault(window.service, {})[window.metric] = pd.Series(
            scored.score, index=values.index)
    incidents = []
    for service, by_metric in windows.items():
        detector = model.bundle.service_detectors.get(service)
        if detector is not None and len(by_metric) >= 2:
            # Align the service's metrics on the first window's timestamps.
            index = next(iter(by_metric.values())).index
            aligned = {m: v.reindex(index) for m, v in by_metric.items()}
            singles = {m: v.reindex(index) for m, v in single_scores[service].items()}
            incidents.extend(service_incidents(service, aligned, singles, detector, policy))
    return ScoreResponse(
        model=_model_info(model),
        threshold=policy.threshold,
        results=results,
        service_incidents=incidents,
        alerts=_alerts(request, results, incidents, policy, generator_url),
    )


def _alerts(request: ScoreRequest, results: list[SeriesResult],
            incidents: list[ServiceIncidentOut], policy: AlarmPolicy,
            generator_url: str) -> list[AlertOut]:
    gap = dt.timedelta(seconds=policy.merge_gap_s)
    out = []
    ends: dict[str, tuple[dt.datetime, dt.timedelta]] = {}
    for window, result in zip(request.series, results, strict=True):
        stamps = window.timestamps
        step = (stamps[-1] - stamps[-2]) if len(stamps) > 1 else dt.timedelta(minutes=1)
        ends[window.service] = max(ends.get(window.service, (stamps[-1], step)),
                                   (stamps[-1], step))
        out.extend(series_alerts(result, stamps[-1], step, gap, generator_url))
    for incident in incidents:
        end, step = ends[incident.service]
        out.append(service_alerts(incident, end, step, gap, generator_url))
    return out


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give: all are a :class:`Problem`."""
    return {code: {"model": Problem} for code in codes}


def _problem(status: int, detail: str | list, request: Request) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    return JSONResponse(
        status_code=status,
        content=Problem(detail=detail, request_id=request_id).model_dump(),
    )


#: Pydantic's bound errors, reworded with the bound in short form (1e+30, not 31 digits).
_BOUND_ERRORS = {"greater_than": "greater than", "greater_than_equal": "at least",
                 "less_than": "less than", "less_than_equal": "at most"}


def _validation_details(error: RequestValidationError) -> list[str]:
    messages = []
    for item in error.errors():
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") in _BOUND_ERRORS and item.get("ctx"):
            (bound,) = item["ctx"].values()
            message = f"{item.get('input')!r} is not {_BOUND_ERRORS[item['type']]} {bound:g}"
        messages.append(f"{location}: {message}" if location else message)
    return messages


def _authorizer(role: str) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller, who must hold ``role`` (401 / 403 otherwise).

    The caller's name (``anonymous`` without a token, ``unknown token`` for one not
    configured) goes on the access-log line; a refused admin action is also audited.
    """

    def refuse(request: Request, who: str, status: int, detail: str,
               headers: dict[str, str] | None = None) -> HTTPException:
        request.state.principal = who
        if role == "admin":
            route = request.scope.get("route")
            request.app.state.audit.record(
                who, getattr(route, "name", request.url.path), f"refused ({status}): {detail}",
                method=request.method, path=request.url.path)
        return HTTPException(status, detail, headers=headers)

    def authorize(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(_bearer)]) -> Principal:
        tokens = request.app.state.settings.tokens
        challenge = {"WWW-Authenticate": "Bearer"}
        if tokens is None:
            principal = ANONYMOUS
        else:
            if credentials is None:
                raise refuse(request, "anonymous", 401, "a bearer token is required", challenge)
            found = tokens.authenticate(credentials.credentials)
            if found is None:
                raise refuse(request, "unknown token", 401, "the bearer token is not known",
                             challenge)
            if role not in found.roles:
                raise refuse(request, found.name, 403,
                             f"token {found.name!r} lacks the role {role!r} this endpoint "
                             f"needs (it has: {', '.join(sorted(found.roles))})")
            principal = found
        request.state.principal = principal.name
        return principal

    return authorize


ScoreCaller = Annotated[Principal, Depends(_authorizer("score"))]
ForecastCaller = Annotated[Principal, Depends(_authorizer("forecast"))]
AdminCaller = Annotated[Principal, Depends(_authorizer("admin"))]


def _endpoint(request: Request) -> str:
    """The route's path template (bounded label values), or "unmatched"."""
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


#: Scores one request; the Serve deployment passes one that batches concurrent requests.
BatchScorer = Callable[[ScoreRequest, str], Awaitable[ScoreResponse]]


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
    holder = holder or ModelHolder(model)
    app = FastAPI(
        title="NovaEvo AIOps",
        version="0.1.0",
        description="Anomaly scores for metric windows, from detectors trained per series; "
                    "forecasts and capacity recommendations.",
    )
    app.state.holder = holder
    app.state.settings = settings
    metrics = ServiceMetrics(
        lambda: time.time() - holder.model.loaded_at if holder.model else float("nan"))
    app.state.metrics = metrics
    verdicts = VerdictRecorder(verdict_sink or VerdictMetrics(
        settings.max_exported_series, settings.max_exported_series_per_caller))
    audit = app.state.audit = AuditLog(settings.audit_log)
    if settings.tokens is None:
        _log.warning("no tokens configured (AIOPS_TOKENS_FILE, AIOPS_TOKENS): the API is open")

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def _request_id(request: Request, call_next: Callable):
        request.state.request_id = request_id(request.headers.get("x-request-id"))
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            response = _problem(413, f"request body of {length} bytes; at most "
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

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        response = _problem(error.status_code, str(error.detail), request)
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return _problem(422, _validation_details(error), request)

    @app.exception_handler(PayloadTooLargeError)
    async def _too_large(request: Request, error: PayloadTooLargeError) -> JSONResponse:
        return _problem(413, str(error), request)

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, error: ValueError) -> JSONResponse:
        return _problem(422, str(error), request)

    @app.exception_handler(NotFittedError)
    async def _not_ready(request: Request, error: NotFittedError) -> JSONResponse:
        return _problem(503, str(error), request)

    @app.exception_handler(ModelFormatError)
    async def _bad_model(request: Request, error: ModelFormatError) -> JSONResponse:
        _log.error("request %s: model unusable: %s", request.state.request_id, error)
        return _problem(503, "the loaded model cannot be used; see the service log", request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        _log.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return _problem(500, "internal error; quote the request id when reporting it", request)

    @app.get("/healthz", summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="A model is loaded and requests can be scored",
             responses=_problems(503))
    def readyz() -> dict[str, object]:
        if settings.drain_file is not None and settings.drain_file.exists():
            raise HTTPException(503, "stopping: draining the requests in flight; send new "
                                     "ones elsewhere")
        loaded = holder.require()
        return {
            "status": "ready",
            "auth": "bearer tokens" if settings.tokens is not None else "disabled (open API)",
            "model": {"name": loaded.name, "version": loaded.version, "alias": loaded.alias},
            "model_source": loaded.source,
            "seconds_since_reload": round(time.time() - loaded.loaded_at, 1),
            "reload_interval_s": settings.reload_interval_s,
            "last_reload_error": holder.last_error,
            "n_series": len(loaded.bundle.series),
            "detectors": loaded.bundle.detector_names,
            "unseen_series": f"scored by {FALLBACK_DETECTOR}",
        }

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        summary="Score windows of one or many series",
        responses=_problems(400, 401, 403, 413, 422, 503),
    )
    async def score(request: ScoreRequest, http_request: Request,
                    who: ScoreCaller) -> ScoreResponse:
        url = str(http_request.url_for("score"))
        if batch_scorer is not None:
            response = await batch_scorer(request, url)
        else:
            response = await run_in_threadpool(score_request, request, holder.require(),
                                               settings, url)
        recorder = verdicts.bound(who.name, holder.require().bundle)
        for result in response.results:
            metrics.scores.observe(max((s for s in result.scores if s is not None), default=0.0))
            recorder.record_score(result.service, result.metric, result.scores)
        metrics.series.inc(len(response.results))
        return response

    @app.post(
        "/v1/forecast",
        response_model=ForecastResponse,
        summary="Forecast one series, with an 80 % interval",
        responses=_problems(400, 401, 403, 413, 422, 503),
    )
    def forecast(request: ForecastRequest, who: ForecastCaller) -> ForecastResponse:
        model = holder.require()
        return forecast_request(request, model, settings, verdicts.bound(who.name, model.bundle))

    @app.post(
        "/v1/recommendations",
        response_model=RecommendationResponse,
        summary="Replicas to run now and a schedule over the horizon, with the reason",
        responses=_problems(400, 401, 403, 413, 422, 503),
    )
    def recommendations(request: RecommendationRequest,
                        who: ForecastCaller) -> RecommendationResponse:
        model = holder.require()
        return recommend(request, model, settings, verdicts.bound(who.name, model.bundle))

    @app.get(
        "/v1/recommendations/{service}/replicas",
        response_model=ReplicaCount,
        summary="Replicas to run now for one service, from its live demand (for KEDA)",
        description="Reads the service's demand from Prometheus as the live config "
                    "(AIOPS_LIVE_CONFIG) says, forecasts and plans it like POST "
                    "/v1/recommendations. KEDA's metrics-api trigger reads `replicas` "
                    "(valueLocation: replicas).",
        responses=_problems(401, 403, 404, 502, 503),
    )
    def replica_count(service: str, who: ForecastCaller) -> ReplicaCount:
        live = settings.live
        if live is None:
            raise HTTPException(404, "no live config: set AIOPS_LIVE_CONFIG to a file with a "
                                     "prometheus url and a scaling entry per service")
        if service not in live.scaling:
            raise HTTPException(404, f"service {service!r} has no scaling entry in the live "
                                     f"config; configured: {sorted(live.scaling)}")
        model = holder.require()
        target = live.scaling[service]
        live.check_step(model.bundle, service, target.metric)
        try:
            demand = live.read(target.query, live.history_s)
            current = live.current_replicas(target)
        except PrometheusImportError as error:
            raise HTTPException(502, f"cannot read {service}'s live data: {error}") from None
        history = History(**from_pandas(demand))
        fields = target.model_dump(exclude={"query", "current_replicas_query"}, exclude_none=True)
        horizon = target.horizon or model.bundle.max_horizon(service, target.metric)
        if horizon is not None:
            fields["horizon"] = horizon
        answer = recommend(RecommendationRequest(service=service, history=history,
                                                 current_replicas=current, **fields),
                           model, settings, verdicts.bound(who.name, model.bundle))
        return ReplicaCount(service=service, replicas=answer.replicas, reason=answer.reason,
                            current_replicas=current, model=answer.model)

    @app.post("/v1/cluster-plan", response_model=ClusterPlanResponse,
              summary="Share a cluster's CPU among services by priority tier",
              responses=_problems(400, 401, 403, 413, 422))
    def cluster(request: ClusterPlanRequest,
                _: ForecastCaller) -> ClusterPlanResponse:
        return plan_cluster(request)

    @app.post("/v1/rightsizing", response_model=RightSizingResponse,
              summary="CPU and memory requests from usage percentiles; under-used resources",
              responses=_problems(400, 401, 403, 413, 422))
    def rightsizing(request: RightSizingRequest,
                    _: ForecastCaller) -> RightSizingResponse:
        return size_resources(request)

    @app.get("/metrics", summary="The service's own metrics, Prometheus text format",
             response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry) + verdicts.sink.render(),
                                 media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/admin/reload", response_model=AdminReloadResponse,
              summary="Load the version the alias points at now (admin)",
              responses=_problems(400, 401, 403, 409, 413, 422, 503))
    def reload(who: AdminCaller) -> AdminReloadResponse:
        if watcher is None:
            audit.record(who.name, "reload", "refused: no registry watcher")
            raise HTTPException(409, "this service was started without a registry to reload from")
        before = holder.model.version if holder.model else None
        swapped = watcher.check()
        after = holder.model.version if holder.model else None
        result = (f"swapped {before} -> {after}" if swapped else
                  f"failed: {holder.last_error}" if holder.last_error else f"kept {after}")
        audit.record(who.name, "reload", result)
        if holder.last_error and not swapped:
            raise HTTPException(503, f"reload failed, still serving {before}: {holder.last_error}")
        return AdminReloadResponse(swapped=swapped, previous_version=before, version=after)

    @app.get("/v1/admin/models", response_model=AdminModelsResponse,
             summary="The registered versions, their aliases and promotions (admin)",
             responses=_problems(401, 403, 404, 413, 422, 503))
    def list_models(who: AdminCaller) -> AdminModelsResponse:
        try:
            versions = registry.model_versions(settings.model_name,
                                               registry.client_for(settings.tracking_uri))
        except LookupError as error:
            audit.record(who.name, "list_models", f"failed: {error}")
            raise HTTPException(404, str(error)) from error
        except MlflowException as error:
            audit.record(who.name, "list_models", f"failed: {error}")
            raise HTTPException(503, f"the registry cannot be read: {error}") from error
        audit.record(who.name, "list_models", f"{len(versions)} versions")
        return AdminModelsResponse(model_name=settings.model_name, versions=versions)

    @app.post("/v1/admin/promote", response_model=AdminModelsResponse,
              summary="Make a registered version the champion (admin); served after a reload",
              responses=_problems(400, 401, 403, 404, 413, 422))
    def promote(body: AdminPromoteRequest, who: AdminCaller) -> AdminModelsResponse:
        try:
            client = registry.client_for(settings.tracking_uri)
            move = registry.set_champion(settings.model_name, body.version, action="promote",
                                         reason=body.reason, by=who.name, client=client)
            versions = registry.model_versions(settings.model_name, client)
        except LookupError as error:
            audit.record(who.name, "promote", f"refused: {error}", version=body.version)
            raise HTTPException(404, str(error)) from error
        audit.record(who.name, "promote", f"champion {move.previous} -> {move.version}",
                     version=body.version, reason=body.reason)
        if watcher is not None:
            watcher.check()
        return AdminModelsResponse(model_name=settings.model_name, versions=versions)

    return app
