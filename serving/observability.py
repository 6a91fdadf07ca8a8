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
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from serving.security import ScrubFilter

#: Latency buckets (seconds): scoring takes milliseconds, a cold forecast up to a second.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Score buckets: tail probabilities in tenfold steps up to the paging threshold and beyond.
SCORE_BUCKETS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999, 1.0)


class ServiceMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self, seconds_since_reload: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
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
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr, scrubbed of tokens and personal-looking values."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ScrubFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_aiops", False)]:
        root.removeHandler(old)
    handler._aiops = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger("serving").setLevel(level)
    logging.getLogger("aiops").setLevel(level)
