"""Capacity routes: replicas per service (``POST /v1/recommendations`` and, for KEDA, from
live demand), a cluster's CPU shared by priority, and right-sizing from usage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from fastapi import APIRouter, HTTPException

from features.prometheus import PrometheusImportError
from models.bundle import DetectorBundle
from models.capacity import (
    MAX_QUANTITY,
    ScalingPolicy,
    ScheduledEvent,
    ServiceNeed,
    cluster_plan,
    right_size,
)
from serving.planning import Recommendation, recommend
from serving.problems import responses
from serving.routes.deps import App, ForecastCaller, Services, model_info, to_pandas
from serving.schemas import (
    AllocationOut,
    ClusterPlanRequest,
    ClusterPlanResponse,
    RecommendationRequest,
    RecommendationResponse,
    ReplicaCount,
    RightSizingOut,
    RightSizingRequest,
    RightSizingResponse,
    ScalingFields,
    ScheduleStep,
)
from serving.scoring import reported

router = APIRouter()

#: Steps planned for when neither the request, the live config nor the forecaster says.
DEFAULT_HORIZON = RecommendationRequest.model_fields["horizon"].default


def scaling_policy(fields: ScalingFields) -> ScalingPolicy:
    return ScalingPolicy(
        capacity_per_replica=fields.capacity_per_replica,
        target_utilisation=fields.target_utilisation,
        peak_utilisation=fields.peak_utilisation,
        min_replicas=fields.min_replicas, max_replicas=fields.max_replicas,
        lead_time_s=fields.lead_time_s, stabilisation_s=fields.stabilisation_s,
        priority=fields.priority)


def _planned(shared: Services, who: str, bundle: DetectorBundle, service: str, metric: str,
             answer: Recommendation) -> None:
    recorder = shared.verdicts.bound(who, bundle)
    recorder.record_forecast(service, metric, answer.forecast.frame)
    recorder.record_replicas(service, answer.plan.replicas_now)


@router.post(
    "/v1/recommendations",
    response_model=RecommendationResponse,
    summary="Replicas to run now and a schedule over the horizon, with the reason",
    responses=responses(400, 401, 403, 413, 422, 503),
)
def recommendations(request: RecommendationRequest, who: ForecastCaller,
                    shared: App) -> RecommendationResponse:
    model = shared.holder.require()
    events = [ScheduledEvent(pd.Timestamp(e.start).tz_convert("UTC"),
                             pd.Timestamp(e.end).tz_convert("UTC"), e.multiplier)
              for e in request.events]
    history = None if request.history is None else to_pandas(request.history)
    answer = recommend(model.bundle, request.service, request.metric, request.horizon, history,
                       scaling_policy(request), request.current_replicas, events,
                       max_points=shared.settings.max_points_per_series)
    _planned(shared, who.name, model.bundle, request.service, request.metric, answer)
    schedule = answer.plan.schedule
    return RecommendationResponse(
        model=model_info(model), service=request.service, replicas=answer.plan.replicas_now,
        reason=answer.plan.reason, forecaster=answer.forecast.forecaster,
        note=answer.forecast.note,
        schedule=[ScheduleStep(timestamp=t, replicas=int(r), expected_utilisation=reported(u),
                               demand=reported(d))
                  for t, r, u, d in zip(schedule.index.to_pydatetime(), schedule["replicas"],
                                        schedule["utilisation"], schedule["demand"], strict=True)],
    )


@router.get(
    "/v1/recommendations/{service}/replicas",
    response_model=ReplicaCount,
    summary="Replicas to run now for one service, from its live demand (for KEDA)",
    description="Reads the service's demand from Prometheus as the live config "
                "(AIOPS_LIVE_CONFIG) says, forecasts and plans it like POST "
                "/v1/recommendations. KEDA's metrics-api trigger reads `replicas` "
                "(valueLocation: replicas).",
    responses=responses(401, 403, 404, 502, 503),
)
def replica_count(service: str, who: ForecastCaller, shared: App) -> ReplicaCount:
    live = shared.settings.live
    if live is None:
        raise HTTPException(404, "no live config: set AIOPS_LIVE_CONFIG to a file with a "
                                 "prometheus url and a scaling entry per service")
    if service not in live.scaling:
        raise HTTPException(404, f"service {service!r} has no scaling entry in the live "
                                 f"config; configured: {sorted(live.scaling)}")
    model = shared.holder.require()
    target = live.scaling[service]
    live.check_step(model.bundle, service, target.metric)
    try:
        demand = live.read(target.query, live.history_s)
        current = live.current_replicas(target)
    except PrometheusImportError as error:
        raise HTTPException(502, f"cannot read {service}'s live data: {error}") from None
    _check_demand(service, demand)
    horizon = (target.horizon or model.bundle.max_horizon(service, target.metric)
               or DEFAULT_HORIZON)
    answer = recommend(model.bundle, service, target.metric, horizon, demand,
                       scaling_policy(target), current,
                       max_points=shared.settings.max_points_per_series)
    _planned(shared, who.name, model.bundle, service, target.metric, answer)
    return ReplicaCount(service=service, replicas=answer.plan.replicas_now,
                        reason=answer.plan.reason, current_replicas=current,
                        model=model_info(model))


def _check_demand(service: str, demand: pd.Series) -> None:
    """Refuse live demand beyond what a request's history may hold (``serving.schemas.Value``).

    The Prometheus reader already turns non-finite samples into gaps.
    """
    values = demand.to_numpy(dtype="float64")
    wrong = np.flatnonzero(np.abs(np.nan_to_num(values)) > MAX_QUANTITY)
    if wrong.size:
        at = int(wrong[0])
        raise ValueError(f"{service}'s live demand holds {values[at]} at "
                         f"{demand.index[at].isoformat()}; values must be of magnitude at "
                         f"most {MAX_QUANTITY:g}")


@router.post("/v1/cluster-plan", response_model=ClusterPlanResponse,
             summary="Share a cluster's CPU among services by priority tier",
             responses=responses(400, 401, 403, 413, 422))
def cluster(request: ClusterPlanRequest, _: ForecastCaller) -> ClusterPlanResponse:
    needs = [ServiceNeed(s.service, s.priority, s.needed_replicas, s.min_replicas,
                         s.cpu_per_replica) for s in request.services]
    allocations = cluster_plan(needs, request.total_cpu)
    used = sum(a.cpu for a in allocations)
    wanted = sum(n.needed_replicas * n.cpu_per_replica for n in needs)
    return ClusterPlanResponse(
        allocations=[AllocationOut(**dataclasses.asdict(a)) for a in allocations],
        cpu_used=reported(used), cpu_short=reported(max(wanted - request.total_cpu, 0.0)))


@router.post("/v1/rightsizing", response_model=RightSizingResponse,
             summary="CPU and memory requests from usage percentiles; under-used resources",
             responses=responses(400, 401, 403, 413, 422))
def rightsizing(request: RightSizingRequest, _: ForecastCaller) -> RightSizingResponse:
    sized = [right_size(i.service, i.resource, np.asarray(i.usage), i.current_request,
                        price_per_unit=i.price_per_unit) for i in request.items]
    return RightSizingResponse(
        recommendations=[RightSizingOut(**dataclasses.asdict(r)) for r in sized],
        under_used=[f"{r.service}/{r.resource}" for r in sized if r.under_used],
        total_saving=reported(sum(r.saving for r in sized)))
