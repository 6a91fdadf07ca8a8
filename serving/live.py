"""Live data from Prometheus: which series to watch and which services to scale.

One YAML file (``AIOPS_LIVE_CONFIG`` for the service, ``--config`` for
``aiops watch``) says where Prometheus is, which PromQL query gives each
watched series, and how each scaled service turns demand into replicas::

    prometheus:
      url: http://prometheus:9090
      timeout_s: 10
    step_s: 60            # the grid windows are read on: the step the models were trained at
                          # (durations here are seconds, or text such as 1m, 1m30s, 1h)
    window_s: 3600        # how much recent data is scored each cycle
    history_s: 86400      # how much past a live forecast starts from
    interval_s: 60        # aiops watch: seconds between cycles
    alertmanager:
      url: http://alertmanager:9093
    series:               # aiops watch scores these
      - service: checkout
        metric: cpu
        query: avg(rate(process_cpu_seconds_total{job="checkout"}[1m]))
    queries:              # ... and every series of these, named by the importer's label rule
      - query: cpu=sum by (service) (rate(process_cpu_seconds_total[1m]))
        labels: {service_labels: [service, job]}      # optional
    scaling:              # GET /v1/recommendations/{service}/replicas plans these
      checkout:
        metric: request_rate
        query: sum(rate(http_requests_total{job="checkout"}[1m]))
        capacity_per_replica: 50
        min_replicas: 2
        max_replicas: 20
        current_replicas_query: kube_deployment_status_replicas{deployment="checkout"}

A query of ``series`` must give exactly one series (aggregate with ``sum``/``avg``
where it would give several); a query of ``queries`` gives a fleet in one request,
each series named as ``aiops data import-prometheus`` names it (the query's own
name, ``NAME=PROMQL``, or its ``__name__``, and the first service label it carries). A series whose models were trained at another step than
``step_s`` is refused (:meth:`LiveConfig.check_step`): detectors count lags and
seasons in points, so a window at another step would be misread.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import httpx
import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from features.prometheus import (
    DEFAULT_SERVICE_LABELS,
    LabelRule,
    PromQuery,
    fetch_window,
    fetch_windows,
)
from features.timeparse import parse_seconds
from models.bundle import DetectorBundle
from serving.schemas import ScalingFields

_STRICT = ConfigDict(extra="forbid", frozen=True)
Name = Annotated[str, Field(min_length=1, max_length=200)]


def _seconds(value: object, info: ValidationInfo) -> object:
    """Text such as ``1m`` in seconds, by the duration grammar every command uses.

    Numbers go on to the field's own checks untouched, as before.
    """
    return parse_seconds(value, name=info.field_name) if isinstance(value, str) else value


class LiveConfigError(ValueError):
    """A live configuration file that cannot be used; the message names the file and field."""


class Endpoint(BaseModel):
    model_config = _STRICT

    url: str = Field(pattern=r"^https?://", description="Base URL, e.g. http://prometheus:9090")
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    _timeout = field_validator("timeout_s", mode="before")(_seconds)


class WatchedSeries(BaseModel):
    model_config = _STRICT

    service: Name
    metric: Name
    query: str = Field(min_length=1, description="PromQL giving exactly one series")


class LabelRuleIn(BaseModel):
    """:class:`features.prometheus.LabelRule` as the live config writes it."""

    model_config = _STRICT

    service_labels: list[Name] = Field(default_factory=lambda: list(DEFAULT_SERVICE_LABELS),
                                       min_length=1, max_length=20)
    metric_label: Name = "__name__"


class WatchedQuery(BaseModel):
    model_config = _STRICT

    query: str = Field(min_length=1, description="PromQL giving any number of series, "
                       "optionally named: NAME=PROMQL names the metric of every series")
    labels: LabelRuleIn = Field(default_factory=LabelRuleIn)

    @field_validator("query")
    @classmethod
    def _parses(cls, text: str) -> str:
        PromQuery.parse(text)
        return text

    @property
    def prom_query(self) -> PromQuery:
        return PromQuery.parse(self.query)

    @property
    def rule(self) -> LabelRule:
        return LabelRule(service_labels=tuple(self.labels.service_labels),
                         metric_label=self.labels.metric_label)


class ScalingTarget(ScalingFields):
    """The fields of ``POST /v1/recommendations``, with the demand read from Prometheus."""

    model_config = _STRICT

    metric: Name = "request_rate"
    query: str = Field(min_length=1, description="PromQL of the demand, one series")
    horizon: int | None = Field(
        default=None, ge=1, le=100_000, description="Steps planned ahead; default: as far as "
        "the series' trained forecaster serves (the --forecast-horizon it was trained with, "
        "288 by default), or 288 without one.")
    current_replicas_query: str | None = Field(
        default=None, description="PromQL of the replicas running now; without it the "
        "plan starts from min_replicas (no scale-down hold).")


class LiveConfig(BaseModel):
    model_config = _STRICT

    prometheus: Endpoint
    alertmanager: Endpoint | None = None
    step_s: float = Field(default=60.0, gt=0, le=86_400,
                          description="The grid series are read on: the step their models were "
                          "trained at (aiops retrain and aiops data synth default to 60 s).")
    window_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    history_s: float = Field(default=86_400.0, gt=0, le=90 * 86_400)
    interval_s: float = Field(default=60.0, ge=1, le=86_400)
    series: list[WatchedSeries] = Field(default_factory=list, max_length=10_000)
    queries: list[WatchedQuery] = Field(default_factory=list, max_length=1_000)
    scaling: dict[Name, ScalingTarget] = Field(default_factory=dict)

    _durations = field_validator("step_s", "window_s", "history_s", "interval_s",
                                 mode="before")(_seconds)

    @model_validator(mode="after")
    def _unique(self) -> LiveConfig:
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(self.series):
            key = (item.service, item.metric)
            if key in seen:
                raise ValueError(f"series[{i}] repeats {item.service}/{item.metric}")
            seen.add(key)
        return self

    @classmethod
    def load(cls, path: str | Path) -> LiveConfig:
        """Read and check ``path``.

        Raises
        ------
        LiveConfigError
            The file is missing, is not YAML, or a field is wrong (named with its path).
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as error:
            raise LiveConfigError(f"cannot read live config {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise LiveConfigError(f"live config {path} is not valid YAML: {error}") from None
        if not isinstance(raw, dict):
            raise LiveConfigError(f"live config {path} must be a mapping at the top level")
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}"
                for e in error.errors())
            raise LiveConfigError(f"live config {path}: {problems}") from None

    def check_step(self, bundle: DetectorBundle, service: str, metric: str) -> None:
        """Refuse a series whose models in ``bundle`` were trained at another step than ``step_s``.

        Raises
        ------
        ValueError
            Naming the series, both steps and the two ways out.
        """
        trained = bundle.trained_step(service, metric)
        if trained is None or trained == pd.Timedelta(seconds=self.step_s):
            return
        raise ValueError(f"{service}/{metric}: the live config reads it every "
                         f"step_s={self.step_s:g} s, but its models were trained on "
                         f"{trained.total_seconds():g} s steps; set step_s: "
                         f"{trained.total_seconds():g} in the live config, or retrain them on "
                         f"data at a {self.step_s:g} s step")

    def read(self, query: str, seconds: float, *, end: pd.Timestamp | None = None,
             client: httpx.Client | None = None) -> pd.Series:
        """The last ``seconds`` of one query's series on the config's grid.

        Raises
        ------
        features.prometheus.PrometheusImportError
            Prometheus failed, or the query gave no series or several.
        """
        end = (end or pd.Timestamp.now(tz="UTC")).floor(f"{self.step_s}s")
        start = end - pd.Timedelta(seconds=seconds - self.step_s)
        return fetch_window(self.prometheus.url, query, start, end, self.step_s,
                            timeout_s=self.prometheus.timeout_s, client=client)

    def read_many(self, query: WatchedQuery, seconds: float, *,
                  end: pd.Timestamp | None = None,
                  client: httpx.Client | None = None) -> dict[tuple[str, str], pd.Series]:
        """The last ``seconds`` of every series of one fleet query, by service and metric.

        Raises
        ------
        features.prometheus.PrometheusImportError
            Prometheus failed.
        features.prometheus.LabelRuleError
            The labels of a series name no service or metric, or two series the same.
        """
        end = (end or pd.Timestamp.now(tz="UTC")).floor(f"{self.step_s}s")
        start = end - pd.Timedelta(seconds=seconds - self.step_s)
        return fetch_windows(self.prometheus.url, query.prom_query, query.rule, start, end,
                             self.step_s, timeout_s=self.prometheus.timeout_s, client=client)

    def current_replicas(self, target: ScalingTarget, *, end: pd.Timestamp | None = None) -> int:
        """Replicas running now, from ``current_replicas_query``, else ``min_replicas``."""
        if target.current_replicas_query is None:
            return target.min_replicas
        running = self.read(target.current_replicas_query, 5 * 60, end=end).dropna()
        if running.empty or not math.isfinite(running.iloc[-1]):
            return target.min_replicas
        return max(0, round(float(running.iloc[-1])))
