"""``POST /v1/forecast``: one series' forecast with an 80 % interval."""

from __future__ import annotations

from fastapi import APIRouter

from models.forecast import FORECAST_COLUMNS
from serving.planning import forecast_series
from serving.problems import responses
from serving.routes.deps import App, ForecastCaller, model_info, to_pandas
from serving.schemas import ForecastRequest, ForecastResponse
from serving.scoring import reported

router = APIRouter()


@router.post(
    "/v1/forecast",
    response_model=ForecastResponse,
    summary="Forecast one series, with an 80 % interval",
    responses=responses(400, 401, 403, 413, 422, 503),
)
def forecast(request: ForecastRequest, who: ForecastCaller, shared: App) -> ForecastResponse:
    model = shared.holder.require()
    history = None if request.history is None else to_pandas(request.history)
    result = forecast_series(model.bundle, request.service, request.metric, request.horizon,
                             history, max_points=shared.settings.max_points_per_series)
    shared.verdicts.bound(who.name, model.bundle).record_forecast(
        request.service, request.metric, result.frame)
    return ForecastResponse(
        model=model_info(model),
        service=request.service,
        metric=request.metric,
        forecaster=result.forecaster,
        known_series=result.known_series,
        note=result.note,
        timestamps=list(result.frame.index.to_pydatetime()),
        **{column: [reported(v) for v in result.frame[column]] for column in FORECAST_COLUMNS},
    )
