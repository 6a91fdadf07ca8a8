"""Service settings: one declarative class, read from the environment (``AIOPS_*``).

pydantic-settings reads and checks every variable; a wrong one stops the service
with its name and what is wrong (:meth:`Settings.from_env`). Fields are grouped as the
README's configuration table is: the model served, API limits, the Serve deployment,
authentication and the live configuration. The groups stay one flat class, so that
``settings.max_points_per_series`` reads the same everywhere and a variable's name is
``AIOPS_`` plus its field's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from models.alarms import AlarmPolicy
from models.score_cache import DEFAULT_MAX_BYTES as DEFAULT_CACHE_BYTES
from registry import DEFAULT_MODEL_NAME
from serving.live import LiveConfig
from serving.security import TokenStore


def _env(name: str) -> Any:
    """A field read from ``name`` in the environment, and by its own name in code."""
    return AliasChoices(name)


class _Environment(EnvSettingsSource):
    """``AIOPS_*`` variables, with the two sources of tokens made into one :class:`TokenStore`.

    ``AIOPS_TOKENS_FILE`` names a file, ``AIOPS_TOKENS`` holds the same JSON inline; the
    file wins when both are set.
    """

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        tokens = TokenStore.from_sources(os.environ.get("AIOPS_TOKENS_FILE"),
                                         values.pop("tokens", None))
        if tokens is not None:
            values["tokens"] = tokens
        return values


class Settings(BaseSettings):
    """What the scoring service needs to know.

    The model served
        ``model_name``, ``model_alias``: the registered model and alias served
        (``models:/<name>@<alias>``). ``tracking_uri``: the MLflow store
        (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlruns/mlflow.db``). ``cache_dir``:
        where downloaded versions are kept. ``reload_interval_s``: how often the registry
        is asked whether the alias moved (0 never). ``registry_timeout_s``: seconds each
        registry request may take; a failed one is tried once more, then the service runs
        on its cache. ``start_from_cache``: start replicas from the cached version without
        asking the registry first (set by ``aiops serve`` when the registry just failed it).
    API limits
        ``max_points_per_series``, ``max_series_per_request``, ``max_body_bytes``: larger
        requests get a 413. ``max_exported_series``: at most this many series' (and
        services') verdicts on ``/metrics``, trained series first; of the series not in the
        served bundle, at most ``max_exported_series_per_caller`` per caller, the least
        recently updated making room (:class:`serving.observability.VerdictMetrics`).
    Scoring
        ``score_cache_bytes``: what each replica's score cache may hold (default 256 MiB,
        about 40 bytes per point and detector; 0 turns it off). A window that slid on by a
        few points is scored for its new points and the detectors' context only
        (:class:`models.score_cache.ScoreCache`); the result is the same without it.
    The Serve deployment
        ``host``, ``port``: where the API listens. ``num_replicas``: a fixed number of
        replicas, or 0 to autoscale between 1 and ``max_replicas`` on the requests in
        flight. ``ingress`` (``AIOPS_SERVE_INGRESS``): ``haproxy``, Ray Serve's
        throughput-optimised mode (:func:`serving.deployment.ingress_environment`), or
        ``proxy``, Ray's Python proxy. ``admin_host``: where HAProxy's stats page and
        metrics listen. ``drain_s``: on SIGTERM, seconds the service keeps serving after
        ``/readyz`` turned 503, so that a load balancer stops sending to it first.
        ``drain_file``: while it exists, ``/readyz`` answers 503 (``aiops serve`` creates
        one of its own on SIGTERM; a Kubernetes ``preStop`` hook may too).
    Authentication
        ``tokens``: bearer tokens and their roles, from ``AIOPS_TOKENS_FILE`` or
        ``AIOPS_TOKENS`` (:mod:`serving.security`); None runs the service open.
        ``audit_log``: JSON-lines file of admin actions; None logs them only.
    Live configuration
        ``alarm_policy``: how alarmed points group into incidents and get a severity
        (``AIOPS_ALARM_POLICY`` names a JSON file overriding the defaults). ``live``: where
        live data comes from (``AIOPS_LIVE_CONFIG``, :mod:`serving.live`), needed by
        ``GET /v1/recommendations/{service}/replicas`` and ``aiops watch``.
    """

    model_config = SettingsConfigDict(env_prefix="AIOPS_", frozen=True, extra="forbid",
                                      populate_by_name=True, arbitrary_types_allowed=True,
                                      env_ignore_empty=True)

    # -- the model served -----------------------------------------------------------------
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1)
    model_alias: str = Field("champion", min_length=1)
    tracking_uri: str = Field("", validation_alias=_env("MLFLOW_TRACKING_URI"))
    cache_dir: Path = Path("mlruns/serving-cache")
    reload_interval_s: float = Field(30.0, ge=0, le=86_400)
    registry_timeout_s: float = Field(3.0, ge=0.1, le=60)
    start_from_cache: bool = False
    # -- API limits -----------------------------------------------------------------------
    max_points_per_series: int = Field(10_000, ge=1)
    max_series_per_request: int = Field(1_000, ge=1)
    max_body_bytes: int = Field(20_000_000, ge=1)
    max_exported_series: int = Field(1_000, ge=1)
    max_exported_series_per_caller: int = Field(100, ge=1)
    score_cache_bytes: int = Field(DEFAULT_CACHE_BYTES, ge=0)
    # -- the Serve deployment -------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    num_replicas: int = Field(0, ge=0, description="0: autoscale")
    max_replicas: int = Field(2, ge=1)
    ingress: Literal["haproxy", "proxy"] = Field(
        "haproxy", validation_alias=_env("AIOPS_SERVE_INGRESS"))
    admin_host: str = "127.0.0.1"
    drain_s: float = 5.0
    drain_file: Path | None = None
    # -- authentication -------------------------------------------------------------------
    tokens: Annotated[TokenStore | None, NoDecode] = None
    audit_log: Path | None = None
    # -- live configuration ---------------------------------------------------------------
    # Read from a file named by the variable, not decoded as JSON in the variable itself.
    alarm_policy: Annotated[AlarmPolicy, NoDecode] = Field(default_factory=AlarmPolicy)
    live: Annotated[LiveConfig | None, NoDecode] = Field(
        None, validation_alias=_env("AIOPS_LIVE_CONFIG"))

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        # Keyword arguments, then the environment: no .env file or secrets folder is read.
        return init_settings, _Environment(settings_cls)

    @field_validator("alarm_policy", mode="before")
    @classmethod
    def _policy_file(cls, value: object) -> object:
        return AlarmPolicy.from_file(value) if isinstance(value, str) else value

    @field_validator("live", mode="before")
    @classmethod
    def _live_file(cls, value: object) -> object:
        return LiveConfig.load(value) if isinstance(value, str) else value

    @field_validator("drain_s")
    @classmethod
    def _drain_fits_the_grace_period(cls, value: float) -> float:
        if not 0 <= value <= 20:
            raise ValueError(f"drain_s={value} must lie in [0, 20]: the whole stop must fit "
                             "Kubernetes' 30 s grace period")
        return value

    @model_validator(mode="after")
    def _resolved(self) -> Self:
        if not self.tracking_uri:  # frozen: resolved once, here, against the working folder
            database = Path("mlruns/mlflow.db").resolve()
            object.__setattr__(self, "tracking_uri", f"sqlite:///{database}")
        return self

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``AIOPS_*`` and ``MLFLOW_TRACKING_URI``; keyword overrides win
        (None leaves a setting to the environment).

        Raises
        ------
        ValueError
            A variable is not what its setting takes; the message names it.
        """
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as error:
            raise ValueError("; ".join(_explain(e) for e in error.errors())) from None

    def replace(self, **changes: object) -> Settings:
        """A copy with ``changes`` applied and checked."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self).model_validate({**values, **changes})


def _explain(error: Any) -> str:
    """One wrong setting: the variable it is read from, what it was given, what is wrong."""
    where = str(error["loc"][0]) if error.get("loc") else ""
    # A field read from a variable of another name is reported under that name.
    name = f"AIOPS_{where.upper()}" if where in Settings.model_fields else where
    cause = error.get("ctx", {}).get("error")
    if error.get("type") == "value_error" and isinstance(cause, ValueError):
        return f"{name}: {cause}"
    message = str(error.get("msg", "invalid"))
    return f"{name}={error.get('input')!r}: {message}"
