"""Request and response bodies of the HTTP API (they make ``/openapi.json``)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class History(BaseModel):
    """Parallel lists of timestamps and values.

    Timestamps are ISO 8601 with a timezone (``2026-01-05T10:00:00Z``),
    strictly increasing. A ``null`` value is a gap.
    """

    model_config = ConfigDict(extra="forbid")

    timestamps: list[datetime] = Field(min_length=1)
    values: list[float | None] = Field(min_length=1)

    @field_validator("timestamps")
    @classmethod
    def _aware_and_increasing(cls, stamps: list[datetime]) -> list[datetime]:
        for i, stamp in enumerate(stamps):
            if stamp.tzinfo is None:
                raise ValueError(f"timestamps[{i}] has no timezone; write it like 2026-01-05T10:00:00Z")
            if i and stamp <= stamps[i - 1]:
                raise ValueError(
                    f"timestamps[{i}] ({stamp.isoformat()}) is not after timestamps[{i - 1}]; "
                    "timestamps must be strictly increasing"
                )
        return stamps

    @field_validator("values")
    @classmethod
    def _finite(cls, values: list[float | None]) -> list[float | None]:
        for i, value in enumerate(values):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"values[{i}] is {value}; send null for a missing value")
        return values

    @model_validator(mode="after")
    def _same_length(self) -> History:
        if len(self.timestamps) != len(self.values):
            raise ValueError(
                f"timestamps has {len(self.timestamps)} items but values has {len(self.values)}"
            )
        return self


class SeriesWindow(History):
    """A window of one series to score; a ``null`` value gets no score and is never anomalous."""

    service: str = Field(min_length=1, max_length=200, examples=["checkout"])
    metric: str = Field(min_length=1, max_length=200, examples=["cpu_utilization"])


class ScoreRequest(BaseModel):
    """One or many windows to score."""

    model_config = ConfigDict(extra="forbid")

    series: list[SeriesWindow] = Field(min_length=1)
    detectors: list[str] | None = Field(
        default=None, description="Detector names to use; default: every detector of the series."
    )
    threshold: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="Score at or above which a point is reported as anomalous; "
                    "default: the service's alarm policy (0.9999 unless configured).",
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


class ScoreResponse(BaseModel):
    model: ModelInfo
    threshold: float
    results: list[SeriesResult]
    service_incidents: list[ServiceIncidentOut] = Field(
        description="Multi-metric incidents: for each service whose metrics were all sent, "
        "a metric that its siblings no longer explain, once per service and time span."
    )


class Problem(BaseModel):
    """Every error answer: what was wrong, and a request id to find it in the logs."""

    detail: str | list
    request_id: str | None = None


class ForecastRequest(BaseModel):
    """What load is coming for one series."""

    model_config = ConfigDict(extra="forbid")

    service: str = Field(min_length=1, max_length=200, examples=["checkout"])
    metric: str = Field(min_length=1, max_length=200, examples=["request_rate"])
    horizon: int = Field(ge=1, le=100_000, description="Steps to forecast after the history.",
                         examples=[288])
    history: History | None = Field(
        default=None,
        description="The recent past to forecast from (the last few days is plenty). "
                    "Default: the end of the model's training data; required for a series "
                    "the model does not know, which is then forecast by a seasonal naive model "
                    "fitted on this history.",
    )


class ForecastResponse(BaseModel):
    model: ModelInfo
    service: str
    metric: str
    forecaster: str = Field(description="The forecaster used, chosen per series by backtest.")
    known_series: bool = Field(description="False: forecast from the request's history alone.")
    timestamps: list[datetime]
    yhat: list[float] = Field(description="Point forecast.")
    q10: list[float]
    q50: list[float]
    q90: list[float] = Field(description="With q10, an 80 % prediction interval.")
