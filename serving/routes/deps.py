"""What every route needs: the app's shared parts, the caller's role, request windows as pandas."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated

import numpy as np
import pandas as pd
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.loader import LoadedModel, ModelHolder, ModelWatcher
from serving.observability import ServiceMetrics, VerdictRecorder
from serving.schemas import History, ModelInfo
from serving.scoring import ScoreQuery, Scoring
from serving.security import ANONYMOUS, AuditLog, Principal
from serving.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="A token with the endpoint's role")


#: Scores one query with the model it returns; the Serve deployment passes one that batches
#: concurrent queries (one model version per batch).
BatchScorer = Callable[[ScoreQuery], Awaitable[tuple[LoadedModel, Scoring]]]


@dataclasses.dataclass(frozen=True)
class Services:
    """The parts of one app that its routes share (``app.state.services``)."""

    settings: Settings
    holder: ModelHolder
    metrics: ServiceMetrics
    verdicts: VerdictRecorder
    audit: AuditLog
    watcher: ModelWatcher | None
    batch_scorer: BatchScorer | None


def services(request: Request) -> Services:
    return request.app.state.services


App = Annotated[Services, Depends(services)]


def model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(name=model.name, version=model.version, alias=model.alias)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def to_pandas(window: History) -> pd.Series:
    """A request's values on a UTC index of its timestamps or grid (``null`` as NaN)."""
    if window.timestamps is None:
        start = (window.start - _EPOCH) // _MICROSECOND
        micros = start + window.step_us * np.arange(len(window.values), dtype="int64")
    else:
        # Whole microseconds since the epoch (a datetime holds no finer): over twice as fast
        # as pandas parsing the list of datetimes, which is a good part of scoring a window.
        micros = np.fromiter(((t - _EPOCH) // _MICROSECOND for t in window.timestamps),
                             dtype="int64", count=len(window.timestamps))
    index = pd.DatetimeIndex(micros * 1000, tz=dt.UTC).as_unit("ns")
    values = np.array([np.nan if v is None else v for v in window.values], dtype="float64")
    return pd.Series(values, index=index)


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
            services(request).audit.record(
                who, getattr(route, "name", request.url.path), f"refused ({status}): {detail}",
                method=request.method, path=request.url.path)
        return HTTPException(status, detail, headers=headers)

    def authorize(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(_bearer)]) -> Principal:
        tokens = services(request).settings.tokens
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
