"""Request and response bodies of the HTTP API (they make ``/openapi.json``).

Request bodies are validated strictly: a number field takes a JSON number, not
``true`` or ``"3"``; timestamps are ISO 8601 strings with a timezone, in the years
1970 to 2261: timestamps are held as int64 nanoseconds since 1970, which end on
2262-04-11, and durations too, which reach 292 years, so that any two accepted
timestamps are a representable duration apart. Every number has documented bounds, so that every
number in an answer is finite. Rules that join several fields (as many values as
timestamps, ``min_replicas`` at most ``max_replicas``) are stated in the
descriptions; a request that breaks one gets a 422 naming the fields.

The module holds every body of the API, long as that makes it: they share the
request conventions above (strict numbers, bounded timestamps and values), and an
API change is reviewed here, beside the committed ``tests/serving/openapi.json``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from models.capacity import (
    MAX_CPU_PER_REPLICA,
    MAX_EVENT_MULTIPLIER,
    MAX_PRICE_PER_UNIT,
    MAX_QUANTITY,
    MAX_REPLICA_COUNT,
    MAX_SCALING_REPLICAS,
    MAX_TOTAL_CPU,
    MIN_CAPACITY_PER_REPLICA,
    MIN_CPU_PER_REPLICA,
    MIN_UTILISATION,
)

#: The years a timestamp may lie in (with any offset): inside pandas' nanosecond range, and
#: less than the longest nanosecond duration (292 years) from one another.
MIN_YEAR, MAX_YEAR = 1970, 2261
_YEAR_PATTERN = r"^(19[7-9][0-9]|2[01][0-9]{2}|22[0-5][0-9]|226[01])-"
_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}")
#: The longest step of a regular-grid window: a year (of 366 days).
MAX_GRID_STEP_S = 366 * 86_400.0
#: The last supported instant (any offset), which a regular grid's last time may not pass.
_LAST_TIME = dt.datetime(MAX_YEAR, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC)


def _iso_text(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not (isinstance(value, str) and _ISO_START.match(value)):
        raise ValueError(f"expected an ISO 8601 timestamp string such as 2026-01-05T10:00:00Z, "
                         f"got {type(value).__name__} {value!r}")
    return value


def _supported_year(stamp: datetime) -> datetime:
    if not MIN_YEAR <= stamp.year <= MAX_YEAR:
        raise ValueError(f"{stamp.isoformat()} is outside the supported years {MIN_YEAR} to "
                         f"{MAX_YEAR}")
    return stamp


def _whole(value: object) -> object:
    # JSON Schema counts 3.0 as an integer; a strict int field would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _number_or_null(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a number; send null for a missing value")
    return value


#: An ISO 8601 string in a request (JSON has no datetime type), checked for a timezone.
Timestamp = Annotated[
    datetime, Strict(False), BeforeValidator(_iso_text), AfterValidator(_supported_year),
    Field(description=f"ISO 8601 with a timezone, in the years {MIN_YEAR} to {MAX_YEAR}.",
          json_schema_extra={"pattern": _YEAR_PATTERN}),
]
#: A metric value in a request: a finite number of magnitude at most MAX_QUANTITY.
Value = Annotated[float, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY),
                  BeforeValidator(_number_or_null)]
#: An integer in a request; a JSON number with no fraction (3.0) counts, as in JSON Schema.
WholeNumber = Annotated[int, BeforeValidator(_whole)]
#: The config of every request body: unknown fields and loosely typed values are refused.
REQUEST = ConfigDict(extra="forbid", strict=True)


class History(BaseModel):
    """A window of values with their times: explicit timestamps, or a regular grid.

    Either ``timestamps`` (ISO 8601 with a timezone, ``2026-01-05T10:00:00Z``,
    strictly increasing, as many values as timestamps) or ``start`` and ``step_s``
    (the first value's time and the seconds between values, as a Prometheus range
    query returns them; not both ways), in the years 1970 to 2261,
    the grid's last time too. A ``null`` value is a gap.
    """

    model_config = REQUEST

    timestamps: list[Timestamp] | None = Field(
        default=None, min_length=1,
        description="Strictly increasing; as many as values. Or send start and step_s.")
    start: Timestamp | None = Field(
        default=None, description="A regular grid's first time (with step_s, instead of "
                                  "timestamps).")
    step_s: float | None = Field(
        default=None, gt=0.0, le=MAX_GRID_STEP_S,
        description="Seconds between a regular grid's values (with start, instead of "
                    "timestamps); a whole number of microseconds.")
    values: list[Value | None] = Field(
        min_length=1, description=f"As many as timestamps (or one per grid step); null for a "
                                  f"gap; magnitude at most {MAX_QUANTITY:g}.")

    @field_validator("timestamps")
    @classmethod
    def _aware_and_increasing(cls, stamps: list[datetime] | None) -> list[datetime] | None:
        for i, stamp in enumerate(stamps or ()):
            if stamp.tzinfo is None:
                raise ValueError(f"timestamps[{i}] has no timezone; write it like 2026-01-05T10:00:00Z")
            if i and stamp <= stamps[i - 1]:
                raise ValueError(
                    f"timestamps[{i}] ({stamp.isoformat()}) is not after timestamps[{i - 1}]; "
                    "timestamps must be strictly increasing"
                )
        return stamps

    @field_validator("start")
    @classmethod
    def _aware(cls, start: datetime | None) -> datetime | None:
        if start is not None and start.tzinfo is None:
            raise ValueError("start has no timezone; write it like 2026-01-05T10:00:00Z")
        return start

    @field_validator("step_s")
    @classmethod
    def _whole_microseconds(cls, step: float | None) -> float | None:
        if step is not None and (round(step * 1e6) < 1 or abs(step * 1e6 - round(step * 1e6)) > 1e-3):
            raise ValueError(f"step_s={step!r} is not a whole number of microseconds")
        return step

    @model_validator(mode="after")
    def _one_way_to_time_the_values(self) -> History:
        grid = [name for name in ("start", "step_s") if getattr(self, name) is not None]
        if self.timestamps is not None:
            if grid:
                raise ValueError(f"send either timestamps or start and step_s, not both "
                                 f"(got timestamps and {' and '.join(grid)})")
            if len(self.timestamps) != len(self.values):
                raise ValueError(f"timestamps has {len(self.timestamps)} items but values has "
                                 f"{len(self.values)}")
            return self
        if len(grid) < 2:
            missing = " and ".join(n for n in ("start", "step_s") if n not in grid)
            raise ValueError(f"send timestamps, or start and step_s for a regular grid "
                             f"({missing} missing)")
        span_us = self.step_us * (len(self.values) - 1)
        if (self.start - _LAST_TIME) // dt.timedelta(microseconds=1) + span_us > 0:
            raise ValueError(f"the grid's last time ({len(self.values)} values at step_s="
                             f"{self.step_s:g} from {self.start.isoformat()}) falls after the "
                             f"supported years {MIN_YEAR} to {MAX_YEAR}")
        return self

    @property
    def step_us(self) -> int:
        """A grid's step in whole microseconds (``step_s`` set)."""
        return round(self.step_s * 1e6)


class SeriesWindow(History):
    """A window of one series to score; a ``null`` value gets no score and is never anomalous."""

    service: str = Field(min_length=1, max_length=200, examples=["checkout"])
    metric: str = Field(min_length=1, max_length=200, examples=["cpu_utilization"])


class ScoreRequest(BaseModel):
    """One or many windows to score."""

    model_config = REQUEST

    series: list[SeriesWindow] = Field(
        min_length=1, description="Each series (service and metric) once per request.")
    detectors: list[str] | None = Field(
        default=None, description="Detector names to use, each trained for the series (a series "
        "the model does not know is scored by the window baseline alone); default: every "
        "detector of the series."
    )
    threshold: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="Score at or above which a point is reported as anomalous, for every "
                    "series; default: the service's alarm policy, from its budget of chance "
                    "alarms per month and each series' step (0.9999 at 1 minute, 0.9995 at 5 "
                    "minutes, unless configured).",
    )


class Anomaly(BaseModel):
    timestamp: datetime
    value: float
    score: float = Field(description="Combined score in [0, 1].")
    expected_low: float
    expected_high: float
    detectors: dict[str, float] = Field(description="Each detector's score at this point.")
    reason: str


class IncidentOut(BaseModel):
    """Alarmed points grouped into one incident (repeats within ``merge_gap_s`` merged)."""

    start: datetime
    end: datetime = Field(description="The last alarmed point.")
    n_points: int
    peak_at: datetime
    peak_score: float
    peak_value: float
    severity: Literal["P0", "P1", "P2", "P3"] = Field(
        description="P0 service unavailable, P1 major features degraded, P2 one feature "
        "affected, P3 minor; from peak rarity, duration and the metric's criticality."
    )
    reason: str


class SeriesResult(BaseModel):
    service: str
    metric: str
    known_series: bool = Field(
        description="False when the model was never trained on this series: it was then scored "
        "by the window baseline, which compares each point with the window's own past."
    )
    threshold: float = Field(
        description="The alarm threshold this series was judged at: the request's, or the "
        "alarm policy's for the series' step (0.9999 at 1 minute, 0.9995 at 5 minutes).")
    detectors: list[str]
    scores: list[float | None] = Field(description="Combined score per point; null for a gap.")
    anomalies: list[Anomaly]
    incidents: list[IncidentOut]


class ServiceIncidentOut(BaseModel):
    """Metrics of one service that stopped moving together, reported once for the service."""

    service: str
    metrics: list[str] = Field(description="The metrics their siblings no longer explain.")
    start: datetime
    end: datetime
    peak_at: datetime
    peak_metric: str
    peak_score: float
    peak_value: float
    expected_value: float = Field(description="What the siblings predicted at the peak.")
    severity: Literal["P0", "P1", "P2", "P3"]
    diagnosis: str = Field(
        examples=["latency_p99 high while cpu_utilization and request_rate are normal: "
                  "suspect network or a downstream dependency"]
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str


class AlertOut(BaseModel):
    """One alert in the shape of Alertmanager's webhook payload."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(description="alertname, service, metric, severity (P0-P3).")
    annotations: dict[str, str] = Field(description="summary, description (the reason), and "
                                        "the expected range or value.")
    startsAt: datetime  # Alertmanager's field names, camelCase as it sends them
    endsAt: datetime = Field(description="0001-01-01T00:00:00Z while firing.")
    generatorURL: str
    fingerprint: str = Field(description="A hash of the labels, as Alertmanager computes one.")


class ScoreResponse(BaseModel):
    model: ModelInfo
    threshold: float = Field(description="The first series' alarm threshold (each result "
                             "carries its own).")
    results: list[SeriesResult]
    service_incidents: list[ServiceIncidentOut] = Field(
        description="Multi-metric incidents: for each service whose metrics were all sent, "
        "a metric that its siblings no longer explain, once per service and time span."
    )
    alerts: list[AlertOut] = Field(
        default_factory=list,
        description="Every incident above as an Alertmanager alert (firing while it lasts to the "
        "end of its window, resolved otherwise), ready to post to /api/v2/alerts.")


class Problem(BaseModel):
    """Every error answer: what was wrong, and a request id to find it in the logs."""

    detail: str | list[str] = Field(description="The reason, or one reason per wrong field "
                                                "(its path, a colon, what is wrong).")
    request_id: str | None = None


class ForecastRequest(BaseModel):
    """What load is coming for one series."""

    model_config = REQUEST

    service: str = Field(min_length=1, max_length=200, examples=["checkout"])
    metric: str = Field(min_length=1, max_length=200, examples=["request_rate"])
    horizon: WholeNumber = Field(ge=1, le=100_000, examples=[288],
                         description="Steps to forecast after the history; for a trained "
                         "series at most its forecaster's max horizon (288 unless trained "
                         "with another --forecast-horizon), and the last step no later than "
                         "2262-04-11.")
    history: History | None = Field(
        default=None,
        description="The recent past to forecast from (the last few days is plenty). "
                    "Default: the end of the model's training data; required for a series "
                    "the model does not know, which is then forecast by a seasonal naive model "
                    "fitted on this history (at least 10 values).",
    )


class ForecastResponse(BaseModel):
    model: ModelInfo
    service: str
    metric: str
    forecaster: str = Field(description="The forecaster used, chosen per series by backtest.")
    known_series: bool = Field(description="False: forecast from the request's history alone.")
    note: str | None = Field(default=None, description="How a fallback forecast was made.")
    timestamps: list[datetime]
    yhat: list[float] = Field(description="Point forecast.")
    q10: list[float]
    q50: list[float]
    q90: list[float] = Field(description="With q10, an 80 % prediction interval.")


class ScheduledEventIn(BaseModel):
    """A sale or a batch run: ``end`` must be after ``start``."""

    model_config = REQUEST

    start: Timestamp
    end: Timestamp = Field(description="After start; ISO 8601 with a timezone, in the years "
                                       f"{MIN_YEAR} to {MAX_YEAR}.")
    multiplier: float = Field(gt=0, le=MAX_EVENT_MULTIPLIER,
                              description="Expected demand × this between start and end.")

    @model_validator(mode="after")
    def _ordered(self) -> ScheduledEventIn:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("event start and end need a timezone, like 2026-01-05T10:00:00Z")
        if self.end <= self.start:
            raise ValueError(f"event end {self.end.isoformat()} is not after its start "
                             f"{self.start.isoformat()}")
        return self


class ScalingFields(BaseModel):
    """How demand becomes replicas: shared by ``POST /v1/recommendations`` and the live config.

    ``min_replicas`` must be at most ``max_replicas``, and ``peak_utilisation`` at least
    ``target_utilisation``.
    """

    capacity_per_replica: float = Field(ge=MIN_CAPACITY_PER_REPLICA, le=MAX_QUANTITY,
                                        description="Demand one replica serves at 100 %.")
    target_utilisation: float = Field(default=0.7, ge=MIN_UTILISATION, le=1,
                                      description="Utilisation the median forecast runs at.")
    peak_utilisation: float = Field(
        default=1.0, ge=MIN_UTILISATION, le=1,
        description="Highest utilisation the priority tier's forecast quantile (q90 for tiers "
        "1-3) may reach; at least target_utilisation.")
    min_replicas: WholeNumber = Field(default=1, ge=0, le=MAX_SCALING_REPLICAS,
                              description="At most max_replicas.")
    max_replicas: WholeNumber = Field(default=100, ge=1, le=MAX_SCALING_REPLICAS)
    lead_time_s: float = Field(default=120.0, ge=0, le=604_800,
                               description="Seconds a new replica takes to be ready.")
    stabilisation_s: float = Field(default=300.0, ge=0, le=604_800)
    priority: WholeNumber = Field(default=3, ge=1, le=5, description="1 critical client functions, "
                          "2 financial transactions, 3 interactive user services, "
                          "4 background processing, 5 analytics and reporting.")

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above "
                             f"max_replicas={self.max_replicas}")
        if self.peak_utilisation < self.target_utilisation:
            raise ValueError(f"peak_utilisation={self.peak_utilisation} is below "
                             f"target_utilisation={self.target_utilisation}")
        return self


class RecommendationRequest(ScalingFields):
    """How many replicas one service should run, now and over the horizon."""

    model_config = REQUEST

    service: str = Field(min_length=1, max_length=200, examples=["checkout"])
    metric: str = Field(default="request_rate", min_length=1, max_length=200,
                        description="The demand metric (request rate or CPU).")
    history: History | None = Field(default=None, description="Recent demand; see /v1/forecast.")
    horizon: WholeNumber = Field(default=288, ge=1, le=100_000, description="Steps to plan for.")
    current_replicas: WholeNumber = Field(ge=0, le=MAX_REPLICA_COUNT)
    events: list[ScheduledEventIn] = Field(default_factory=list, max_length=100)


class ScheduleStep(BaseModel):
    timestamp: datetime
    replicas: int
    expected_utilisation: float
    demand: float = Field(description="The demand provisioned for (quantile × events).")


class RecommendationResponse(BaseModel):
    model: ModelInfo
    service: str
    replicas: int = Field(description="Replicas to run now.")
    reason: str
    forecaster: str
    note: str | None = None
    schedule: list[ScheduleStep]


class ReplicaCount(BaseModel):
    """One number for an autoscaler: KEDA's metrics-api trigger reads ``replicas``."""

    service: str
    replicas: int = Field(description="Replicas to run now (valueLocation: replicas).")
    current_replicas: int = Field(description="Replicas running, as the plan started from.")
    reason: str
    model: ModelInfo


class ServiceNeedIn(BaseModel):
    model_config = REQUEST

    service: str = Field(min_length=1, max_length=200)
    priority: WholeNumber = Field(ge=1, le=5)
    needed_replicas: WholeNumber = Field(ge=0, le=MAX_REPLICA_COUNT)
    min_replicas: WholeNumber = Field(default=0, ge=0, le=MAX_REPLICA_COUNT)
    cpu_per_replica: float = Field(default=1.0, ge=MIN_CPU_PER_REPLICA, le=MAX_CPU_PER_REPLICA,
                                   description="At least a millicore.")


class ClusterPlanRequest(BaseModel):
    model_config = REQUEST

    total_cpu: float = Field(ge=0, le=MAX_TOTAL_CPU,
                             description="CPU the cluster can give these services.")
    services: list[ServiceNeedIn] = Field(min_length=1, max_length=10_000,
                                          description="Each service once.")


class AllocationOut(BaseModel):
    service: str
    priority: int
    needed_replicas: int
    allocated_replicas: int
    cpu: float
    loses: str


class ClusterPlanResponse(BaseModel):
    allocations: list[AllocationOut]
    cpu_used: float
    cpu_short: float = Field(description="CPU the cluster would need beyond total_cpu.")


class UsageIn(BaseModel):
    model_config = REQUEST

    service: str = Field(min_length=1, max_length=200)
    resource: Literal["cpu", "memory"]
    current_request: float = Field(gt=0, le=MAX_QUANTITY)
    usage: list[Annotated[float, Field(ge=0, le=MAX_QUANTITY)]] = Field(
        min_length=10, max_length=1_000_000)
    price_per_unit: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_UNIT,
                                  description="Cost of one unit of request.")


class RightSizingRequest(BaseModel):
    model_config = REQUEST

    items: list[UsageIn] = Field(min_length=1, max_length=10_000)


class RightSizingOut(BaseModel):
    service: str
    resource: str
    current_request: float
    recommended_request: float
    usage_p50: float
    usage_p95: float
    usage_max: float
    under_used: bool
    saving: float
    reason: str


class RightSizingResponse(BaseModel):
    recommendations: list[RightSizingOut]
    under_used: list[str] = Field(description="service/resource whose request is over twice "
                                  "what it needs.")
    total_saving: float


# -- admin ---------------------------------------------------------------------------------
class AdminReloadResponse(BaseModel):
    swapped: bool = Field(description="Whether a new version was loaded and is now served.")
    previous_version: str | None
    version: str | None


class ModelVersionOut(BaseModel):
    version: str
    aliases: list[str]
    created: str
    run_id: str | None
    promotion: str


class AdminModelsResponse(BaseModel):
    model_name: str
    versions: list[ModelVersionOut]


class AdminPromoteRequest(BaseModel):
    model_config = REQUEST

    version: str = Field(min_length=1, max_length=20, pattern=r"^[0-9]+$")
    reason: str = Field(min_length=3, max_length=1000,
                        description="Why; recorded with who and when.")
