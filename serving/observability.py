"""The service's own telemetry: Prometheus metrics, JSON logs with request ids, a body limit.

``/metrics`` (Prometheus text format) exposes, per endpoint (the route's path
template, so labels stay bounded): requests by status, errors, a latency
histogram; the model version in use; the distribution of the highest score
of every scored series; the seconds since the model was (re)loaded. Each
app has its own registry, so several apps in one process (tests) do not
collide.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol, TextIO

import pandas as pd
from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from models.bundle import DetectorBundle
from models.score_cache import ScoreCacheStats
from serving.security import ScrubFilter

#: Latency buckets (seconds): scoring takes milliseconds, a cold forecast up to a second.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Score buckets: tail probabilities in tenfold steps up to the paging threshold and beyond.
SCORE_BUCKETS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999, 1.0)


class ServiceMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self, seconds_since_reload: Callable[[], float],
                 cache_stats: Callable[[], ScoreCacheStats] | None = None) -> None:
        self.registry = CollectorRegistry()
        if cache_stats is not None:
            self.registry.register(_ScoreCacheCollector(cache_stats))
        self.requests = Counter("aiops_requests", "HTTP requests by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.errors = Counter("aiops_request_errors", "Responses with a 5xx status, by endpoint",
                              ["endpoint"], registry=self.registry)
        self.latency = Histogram("aiops_request_duration_seconds", "Request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model = Gauge("aiops_model_info", "The model version in use (value 1)",
                           ["name", "version", "alias"], registry=self.registry)
        self.scores = Histogram("aiops_series_max_score",
                                "Highest score of each scored series window",
                                buckets=SCORE_BUCKETS, registry=self.registry)
        self.series = Counter("aiops_scored_series", "Series windows scored",
                              registry=self.registry)
        reload_age = Gauge("aiops_seconds_since_model_reload",
                           "Seconds since the served model was loaded", registry=self.registry)
        reload_age.set_function(seconds_since_reload)
        self._model_labels: tuple[str, str, str] | None = None

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 500:
            self.errors.labels(endpoint).inc()

    def set_model(self, name: str, version: str, alias: str) -> None:
        labels = (name, version, alias)
        if labels == self._model_labels:
            return
        if self._model_labels is not None:
            self.model.remove(*self._model_labels)
        self.model.labels(*labels).set(1)
        self._model_labels = labels


class _ScoreCacheCollector(Collector):
    """The score cache's counts, read at each scrape (:class:`models.score_cache.ScoreCache`)."""

    def __init__(self, stats: Callable[[], ScoreCacheStats]) -> None:
        self._stats = stats

    def collect(self):
        stats = self._stats()
        points = CounterMetricFamily(
            "aiops_score_cache_points", "Points scored by a detector (scored) or taken from "
            "the score cache (reused)", labels=["outcome"])
        points.add_metric(["reused"], stats.reused_points)
        points.add_metric(["scored"], stats.scored_points)
        yield points
        yield CounterMetricFamily("aiops_score_cache_evictions",
                                  "Entries the score cache dropped to stay within its bound",
                                  value=stats.n_evicted)
        yield GaugeMetricFamily("aiops_score_cache_entries",
                                "Series-detector windows the score cache holds",
                                value=stats.n_entries)
        yield GaugeMetricFamily("aiops_score_cache_bytes", "Bytes the score cache holds",
                                value=stats.n_bytes)
        yield GaugeMetricFamily("aiops_score_cache_max_bytes", "The score cache's bound",
                                value=stats.max_bytes)


#: Distances ahead, in seconds, at which forecast quantiles are exported (labels stay few).
FORECAST_HORIZONS_S: dict[str, int] = {"5m": 300, "15m": 900, "1h": 3600}
FORECAST_QUANTILES = ("q10", "q50", "q90")


class ExportSlots:
    """Which label keys (series or services) are exported, within ``capacity``.

    Trained keys (those in the served bundle) come first: they take the slot of the least
    recently updated untrained key when all are taken, and no untrained key ever takes
    theirs. Untrained keys are evicted by age: when all slots are taken, or when their
    caller (the principal that last updated them) already holds ``per_caller`` of them, the
    least recently updated one (of that caller, in the second case) makes room. An
    untrained key is refused only when trained keys fill every slot; a trained one, never
    (the least recently updated trained key makes room).
    """

    def __init__(self, capacity: int, per_caller: int) -> None:
        self.capacity, self.per_caller = capacity, per_caller
        # Least recently updated first.
        self._trained: OrderedDict[Hashable, None] = OrderedDict()
        self._untrained: OrderedDict[Hashable, str] = OrderedDict()
        self._by_caller: dict[str, OrderedDict[Hashable, None]] = {}

    def admit(self, key: Hashable, trained: bool, caller: str) -> tuple[bool, list[Hashable]]:
        """Whether ``key`` is exported now, and the keys evicted to make room for it."""
        present = self._discard(key)
        evicted = []
        if not trained:
            held = self._by_caller.get(caller, {})
            while len(held) >= self.per_caller:
                evicted.append(self._evict(next(iter(held))))
        if len(self._trained) + len(self._untrained) >= self.capacity:
            if self._untrained:
                evicted.append(self._evict(next(iter(self._untrained))))
            elif trained:
                evicted.append(self._evict(next(iter(self._trained))))
            else:
                return False, [*evicted, key] if present else evicted
        if trained:
            self._trained[key] = None
        else:
            self._untrained[key] = caller
            self._by_caller.setdefault(caller, OrderedDict())[key] = None
        return True, evicted

    def _evict(self, key: Hashable) -> Hashable:
        self._discard(key)
        return key

    def _discard(self, key: Hashable) -> bool:
        if key in self._trained:
            del self._trained[key]
            return True
        caller = self._untrained.pop(key, None)
        if caller is None:
            return False
        held = self._by_caller[caller]
        del held[key]
        if not held:
            del self._by_caller[caller]
        return True


class VerdictMetrics:
    """The service's answers as metrics, for recording and alerting rules and Grafana panels.

    - ``aiops_anomaly_score{service, metric}``: the score of the newest point of the last
      window scored (NaN points do not count).
    - ``aiops_forecast{service, metric, quantile, horizon}``: the last forecast's q10, q50
      and q90 at 5 minutes, 15 minutes and 1 hour after its last observation, where the
      forecast reaches that far.
    - ``aiops_recommended_replicas{service}``: replicas to run now, from the last
      recommendation.

    Labels stay bounded: at most ``max_series`` service/metric pairs (and as many
    services) are exported, trained ones first, at most ``max_series_per_caller``
    untrained ones per caller, the rest evicted by age (see :class:`ExportSlots`), so a
    caller that invents names can neither blow up the scrape nor hide trained series or
    other callers' verdicts. Evicted label sets are removed from the gauges and counted in
    ``aiops_verdict_series_evicted_total``; verdicts refused because trained series fill
    every slot, in ``aiops_verdict_series_dropped_total``.
    """

    def __init__(self, max_series: int = 1_000, max_series_per_caller: int = 100,
                 registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        registry = self.registry
        self.score = Gauge("aiops_anomaly_score",
                           "Score in [0, 1] of the newest point of the last scored window",
                           ["service", "metric"], registry=registry)
        self.forecast = Gauge("aiops_forecast",
                              "Last forecast's quantile at a distance ahead of its last point",
                              ["service", "metric", "quantile", "horizon"], registry=registry)
        self.replicas = Gauge("aiops_recommended_replicas",
                              "Replicas to run now, from the last recommendation",
                              ["service"], registry=registry)
        self.dropped = Counter("aiops_verdict_series_dropped",
                               "Verdicts not exported because trained series fill every slot",
                               registry=registry)
        self.evicted = Counter("aiops_verdict_series_evicted",
                               "Series (or services) no longer exported, to make room for "
                               "newer or trained ones", registry=registry)
        self._series = ExportSlots(max_series, max_series_per_caller)
        self._services = ExportSlots(max_series, max_series_per_caller)
        self._lock = threading.Lock()

    def _admit(self, slots: ExportSlots, key: Hashable, trained: bool, caller: str) -> bool:
        """Whether ``key`` is exported; under the lock, evicted label sets are removed."""
        admitted, evicted = slots.admit(key, trained, caller)
        for old in evicted:
            if slots is self._services:
                self.replicas.remove(old)
            else:
                self.score.remove(*old)
                for horizon in FORECAST_HORIZONS_S:
                    for quantile in FORECAST_QUANTILES:
                        self.forecast.remove(*old, quantile, horizon)
            if old != key:
                self.evicted.inc()
        if not admitted:
            self.dropped.inc()
        return admitted

    def set_score(self, service: str, metric: str, value: float, *,
                  trained: bool, caller: str) -> None:
        with self._lock:
            if self._admit(self._series, (service, metric), trained, caller):
                self.score.labels(service, metric).set(value)

    def set_forecast(self, service: str, metric: str, points: dict[str, dict[str, float]], *,
                     trained: bool, caller: str) -> None:
        """``points``: horizon label → quantile → value (see :func:`forecast_points`)."""
        with self._lock:
            if points and self._admit(self._series, (service, metric), trained, caller):
                for horizon, by_quantile in points.items():
                    for quantile, value in by_quantile.items():
                        self.forecast.labels(service, metric, quantile, horizon).set(value)

    def set_replicas(self, service: str, replicas: int, *, trained: bool, caller: str) -> None:
        with self._lock:
            if self._admit(self._services, service, trained, caller):
                self.replicas.labels(service).set(replicas)

    def render(self) -> bytes:
        """The verdicts in Prometheus' text format."""
        return generate_latest(self.registry)


def newest_score(scores: Sequence[float | None]) -> float | None:
    """The score of the newest point that has one."""
    return next((s for s in reversed(scores) if s is not None), None)


def forecast_points(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """A forecast's quantiles at :data:`FORECAST_HORIZONS_S` after its last observation.

    ``frame`` is indexed by timestamp on a regular grid; one row gives no step, so no
    distance ahead to label it with, and nothing.
    """
    if len(frame) < 2:
        return {}
    step_s = (frame.index[1] - frame.index[0]).total_seconds()
    points = {}
    for horizon, seconds in FORECAST_HORIZONS_S.items():
        # Row k forecasts (k + 1) steps after the last observation.
        position = math.ceil(seconds / step_s) - 1
        if position < len(frame):
            points[horizon] = {q: float(frame[q].iloc[position]) for q in FORECAST_QUANTILES}
    return points


class VerdictSink(Protocol):
    """Where verdicts go: a :class:`VerdictMetrics` here, or one shared by all replicas."""

    def set_score(self, service: str, metric: str, value: float, *,
                  trained: bool, caller: str) -> None: ...
    def set_forecast(self, service: str, metric: str, points: dict[str, dict[str, float]], *,
                     trained: bool, caller: str) -> None: ...
    def set_replicas(self, service: str, replicas: int, *,
                     trained: bool, caller: str) -> None: ...
    def render(self) -> bytes: ...


class VerdictRecorder:
    """Turns the service's answers into verdicts for a :class:`VerdictSink`.

    ``caller`` is the principal's name; a series is trained when it is in ``bundle`` (the
    served model's), and a service when one of its series is.
    """

    def __init__(self, sink: VerdictSink, caller: str = "anonymous",
                 bundle: DetectorBundle | None = None) -> None:
        self.sink, self.caller, self.bundle = sink, caller, bundle

    def bound(self, caller: str, bundle: DetectorBundle) -> VerdictRecorder:
        """A recorder for one request: its caller and the bundle that answered it."""
        return VerdictRecorder(self.sink, caller, bundle)

    def _trained(self, service: str, metric: str | None = None) -> bool:
        if self.bundle is None:
            return False
        if metric is not None:
            return (service, metric) in self.bundle
        return any(known == service for known, _ in self.bundle.detectors)

    def record_score(self, service: str, metric: str, scores: Sequence[float | None]) -> None:
        newest = newest_score(scores)
        if newest is not None:
            self.sink.set_score(service, metric, newest, trained=self._trained(service, metric),
                                caller=self.caller)

    def record_forecast(self, service: str, metric: str, frame: pd.DataFrame) -> None:
        points = forecast_points(frame)
        if points:
            self.sink.set_forecast(service, metric, points,
                                   trained=self._trained(service, metric), caller=self.caller)

    def record_replicas(self, service: str, replicas: int) -> None:
        self.sink.set_replicas(service, replicas, trained=self._trained(service),
                               caller=self.caller)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request id if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        for key in ("request_id", "endpoint", "status", "duration_ms", "principal"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry)


class BodyLimit:
    """ASGI middleware: a request body is read up to ``max_bytes`` bytes, then refused (413).

    The bytes are counted as they arrive, so a chunked body, which announces no length,
    is stopped as soon as it passes the limit instead of being read into memory whole.
    A ``Content-Length`` above the limit is refused before the app runs (see
    :func:`serving.app.create_app`).
    """

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        read = 0

        async def counted() -> dict:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_bytes:
                    # FastAPI lets an HTTPException from reading the body through to the
                    # app's handlers, which answer it like any other 413.
                    raise HTTPException(413, f"request body over {self.max_bytes} bytes "
                                             f"(read so far: {read}); at most "
                                             f"{self.max_bytes} accepted")
            return message

        await self.app(scope, counted, send)


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """JSON lines on ``stream`` (default stderr), scrubbed of tokens and personal values.

    Each line is written as it is logged. A Serve replica passes its real stderr
    (``sys.__stderr__``, its worker's ``.err`` file): Ray Serve's ``sys.stderr`` is a
    logger of its own that holds up to 1,000 lines in memory.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_aiops", False)]:
        root.removeHandler(old)
    handler._aiops = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger("serving").setLevel(level)
    logging.getLogger("aiops").setLevel(level)


def flush_buffered_logs(logger_name: str = "ray.serve", *,
                        flush_level: int | None = logging.WARNING) -> None:
    """Write out what ``logger_name``'s buffering handlers hold; hold no warning from now on.

    Ray Serve's throughput-optimised mode buffers each replica's log in a
    :class:`logging.handlers.MemoryHandler` until 1,000 lines or an error; whatever it
    holds when the replica stops is lost unless flushed.
    """
    for handler in logging.getLogger(logger_name).handlers:
        if isinstance(handler, logging.handlers.MemoryHandler):
            if flush_level is not None:
                handler.flushLevel = min(handler.flushLevel, flush_level)
            handler.flush()
