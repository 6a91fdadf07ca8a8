"""``POST /v1/score``: windows of one or many series → scores, anomalies, incidents, alerts."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from serving.loader import LoadedModel
from serving.problems import PayloadTooLargeError, responses
from serving.routes.deps import App, ScoreCaller, model_info, to_pandas
from serving.schemas import (
    AlertOut,
    Anomaly,
    IncidentOut,
    ScoreRequest,
    ScoreResponse,
    SeriesResult,
    ServiceIncidentOut,
)
from serving.scoring import ScoreQuery, Scoring, Window, score_query
from serving.settings import Settings

router = APIRouter()


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


def to_query(request: ScoreRequest, settings: Settings, generator_url: str) -> ScoreQuery:
    """The request as the scoring use-case takes it (limits checked, threshold applied)."""
    check_limits(request, settings)
    policy = settings.alarm_policy
    if request.threshold is not None:
        policy = dataclasses.replace(policy, threshold=request.threshold)
    return ScoreQuery(
        windows=[Window(w.service, w.metric, to_pandas(w)) for w in request.series],
        policy=policy, detectors=request.detectors, generator_url=generator_url)


def to_response(model: LoadedModel, scoring: Scoring) -> ScoreResponse:
    return ScoreResponse(
        model=model_info(model),
        threshold=scoring.threshold,
        results=[SeriesResult(
            service=r.service, metric=r.metric, known_series=r.known_series,
            threshold=r.threshold, detectors=r.detectors, scores=r.scores,
            anomalies=[Anomaly(**vars(a)) for a in r.anomalies],
            incidents=[IncidentOut(**vars(i)) for i in r.incidents],
        ) for r in scoring.results],
        service_incidents=[ServiceIncidentOut(**vars(i)) for i in scoring.service_incidents],
        alerts=[AlertOut(**vars(a)) for a in scoring.alerts],
    )


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    summary="Score windows of one or many series",
    responses=responses(400, 401, 403, 413, 422, 503),
)
async def score(request: ScoreRequest, http_request: Request, who: ScoreCaller,
                shared: App) -> ScoreResponse:
    query = to_query(request, shared.settings, str(http_request.url_for("score")))
    if shared.batch_scorer is not None:
        model, scoring = await shared.batch_scorer(query)
    else:
        model = shared.holder.require()
        scoring = await run_in_threadpool(score_query, model.bundle, query,
                                          shared.holder.score_cache)
    recorder = shared.verdicts.bound(who.name, model.bundle)
    for result in scoring.results:
        shared.metrics.scores.observe(max((s for s in result.scores if s is not None),
                                          default=0.0))
        recorder.record_score(result.service, result.metric, result.scores)
    shared.metrics.series.inc(len(scoring.results))
    return to_response(model, scoring)
