"""Service settings, read once from the environment (``AIOPS_*``) with sane defaults."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from models.alarms import AlarmPolicy
from serving.live import LiveConfig
from serving.security import TokenStore


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def _env_number(name: str, default, kind: type, what: str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not {what}") from None


def load_alarm_policy(path: Path) -> AlarmPolicy:
    """An :class:`AlarmPolicy` from a JSON file such as
    ``{"threshold": 0.995, "merge_gap_s": 900, "criticality": {"payments_latency": 1}}``."""
    try:
        return AlarmPolicy.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"alarm policy {path}: {error}") from error


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What the scoring service needs to know.

    Parameters
    ----------
    model_name, model_alias
        The registered model and alias served (``models:/<name>@<alias>``).
    tracking_uri
        MLflow tracking store; ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlruns/mlflow.db``.
    cache_dir
        Where downloaded model versions are kept.
    max_points_per_series, max_series_per_request
        Request size limits; larger requests get a 413.
    num_replicas, max_replicas
        A fixed number of Serve replicas, or 0 (default) to autoscale between 1 and
        ``max_replicas`` on the requests in flight.
    reload_interval_s
        How often the registry is asked whether the alias moved (a new
        champion is served within this); 0 never reloads.
    tokens
        Bearer tokens and their roles (``AIOPS_TOKENS_FILE`` or ``AIOPS_TOKENS``, see
        :mod:`serving.security`); None runs the service open.
    audit_log
        JSON-lines file of admin actions (``AIOPS_AUDIT_LOG``); None logs them only.
    max_body_bytes
        Largest request body accepted (413 beyond).
    alarm_policy
        How alarmed points group into incidents and get a severity;
        ``AIOPS_ALARM_POLICY`` names a JSON file that overrides the defaults.
    max_exported_series, max_exported_series_per_caller
        At most ``max_exported_series`` series' (and services') verdicts are exported on
        ``/metrics`` (``AIOPS_MAX_EXPORTED_SERIES``), trained series first; of the series
        not in the served bundle, at most ``max_exported_series_per_caller`` per caller
        (``AIOPS_MAX_EXPORTED_SERIES_PER_CALLER``), the least recently updated making room
        (see :class:`serving.observability.VerdictMetrics`).
    ingress
        What takes HTTP in front of the Serve replicas (``AIOPS_SERVE_INGRESS``):
        ``haproxy`` (default; Ray Serve's throughput-optimised mode, see
        :func:`serving.deployment.ingress_environment`) or ``proxy`` (Ray's Python proxy).
    live
        Where live data comes from (``AIOPS_LIVE_CONFIG``, see :mod:`serving.live`); needed
        by ``GET /v1/recommendations/{service}/replicas``.
    admin_host
        Where HAProxy's stats page and metrics listen (``AIOPS_ADMIN_HOST``; loopback).
    drain_s
        On SIGTERM, seconds the service keeps serving after ``/readyz`` turned 503, so that
        a load balancer stops sending to it first (``AIOPS_DRAIN_S``, 0 to 20).
    drain_file
        While this file exists, ``/readyz`` answers 503 (``AIOPS_DRAIN_FILE``): ``aiops
        serve`` creates one of its own on SIGTERM; a Kubernetes ``preStop`` hook may too.
    registry_timeout_s
        Seconds each registry request may take (``AIOPS_REGISTRY_TIMEOUT_S``); a failed
        one is tried once more, then the service runs on its cache.
    start_from_cache
        Start replicas from the cached version without asking the registry first (set by
        ``aiops serve`` when the registry just failed it; the watcher keeps asking).
    """

    model_name: str = "novaevo-detectors"
    model_alias: str = "champion"
    tracking_uri: str = ""
    cache_dir: Path = Path("mlruns/serving-cache")
    host: str = "127.0.0.1"
    port: int = 8000
    max_points_per_series: int = 10_000
    max_series_per_request: int = 1_000
    num_replicas: int = 0
    max_replicas: int = 2
    reload_interval_s: float = 30.0
    tokens: TokenStore | None = None
    audit_log: Path | None = None
    max_body_bytes: int = 20_000_000
    alarm_policy: AlarmPolicy = dataclasses.field(default_factory=AlarmPolicy)
    max_exported_series: int = 1_000
    max_exported_series_per_caller: int = 100
    ingress: str = "haproxy"
    live: LiveConfig | None = None
    admin_host: str = "127.0.0.1"
    drain_s: float = 5.0
    drain_file: Path | None = None
    registry_timeout_s: float = 3.0
    start_from_cache: bool = False

    def __post_init__(self) -> None:
        if not self.tracking_uri:
            database = Path("mlruns/mlflow.db").resolve()
            object.__setattr__(self, "tracking_uri", f"sqlite:///{database}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port={self.port} must lie in [1, 65535]")
        if not 0 <= self.reload_interval_s <= 86_400:
            raise ValueError(f"reload_interval_s={self.reload_interval_s} must lie in [0, 86400]")
        if self.ingress not in ("haproxy", "proxy"):
            raise ValueError(f"ingress={self.ingress!r} must be 'haproxy' or 'proxy'")
        if not 0 <= self.drain_s <= 20:
            raise ValueError(f"drain_s={self.drain_s} must lie in [0, 20]: the whole stop must "
                             "fit Kubernetes' 30 s grace period")
        if not 0.1 <= self.registry_timeout_s <= 60:
            raise ValueError(f"registry_timeout_s={self.registry_timeout_s} must lie in "
                             "[0.1, 60]")
        if self.num_replicas < 0:
            raise ValueError(f"num_replicas={self.num_replicas} must be >= 0 (0: autoscale)")
        for name in ("max_points_per_series", "max_series_per_request", "max_replicas",
                     "max_body_bytes", "max_exported_series", "max_exported_series_per_caller"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``AIOPS_*`` and ``MLFLOW_TRACKING_URI``; keyword overrides win."""
        values: dict[str, object] = {
            "model_name": os.environ.get("AIOPS_MODEL_NAME", cls.model_name),
            "model_alias": os.environ.get("AIOPS_MODEL_ALIAS", cls.model_alias),
            "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI", ""),
            "cache_dir": Path(os.environ.get("AIOPS_CACHE_DIR", str(cls.cache_dir))),
            "max_points_per_series": _env_int("AIOPS_MAX_POINTS_PER_SERIES", cls.max_points_per_series),
            "max_series_per_request": _env_int("AIOPS_MAX_SERIES_PER_REQUEST", cls.max_series_per_request),
            "reload_interval_s": _env_int("AIOPS_RELOAD_INTERVAL_S", int(cls.reload_interval_s)),
            "max_body_bytes": _env_int("AIOPS_MAX_BODY_BYTES", cls.max_body_bytes),
            "num_replicas": _env_int("AIOPS_NUM_REPLICAS", cls.num_replicas),
            "ingress": os.environ.get("AIOPS_SERVE_INGRESS", cls.ingress),
            "max_exported_series": _env_int("AIOPS_MAX_EXPORTED_SERIES",
                                            cls.max_exported_series),
            "max_exported_series_per_caller": _env_int("AIOPS_MAX_EXPORTED_SERIES_PER_CALLER",
                                                       cls.max_exported_series_per_caller),
            "max_replicas": _env_int("AIOPS_MAX_REPLICAS", cls.max_replicas),
            "admin_host": os.environ.get("AIOPS_ADMIN_HOST") or cls.admin_host,
            "drain_s": _env_float("AIOPS_DRAIN_S", cls.drain_s),
            "registry_timeout_s": _env_float("AIOPS_REGISTRY_TIMEOUT_S",
                                             cls.registry_timeout_s),
            "tokens": TokenStore.from_sources(os.environ.get("AIOPS_TOKENS_FILE"),
                                              os.environ.get("AIOPS_TOKENS")),
        }
        if os.environ.get("AIOPS_AUDIT_LOG"):
            values["audit_log"] = Path(os.environ["AIOPS_AUDIT_LOG"])
        if os.environ.get("AIOPS_DRAIN_FILE"):
            values["drain_file"] = Path(os.environ["AIOPS_DRAIN_FILE"])
        if os.environ.get("AIOPS_LIVE_CONFIG"):
            values["live"] = LiveConfig.load(os.environ["AIOPS_LIVE_CONFIG"])
        policy_file = os.environ.get("AIOPS_ALARM_POLICY")
        if policy_file:
            values["alarm_policy"] = load_alarm_policy(Path(policy_file))
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["cache_dir"] = Path(str(values["cache_dir"]))
        return cls(**values)
