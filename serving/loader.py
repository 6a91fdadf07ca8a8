"""Loading the served model from the MLflow registry into a local cache, and hot swaps.

:class:`ModelWatcher` polls the registry every ``reload_interval_s`` and,
when the served alias points at another version, loads it beside the old
one and swaps it into the :class:`ModelHolder` in one assignment. A request
takes the holder's model once when it starts, so a request in flight
finishes on the version it began with and none is dropped; every response
names the version it used. A failed load keeps the old model and is
reported on ``/readyz``.

When the registry is unreachable at start-up (:func:`start_model`), the
service starts from the version it last loaded from the registry (kept in
its cache with a pointer file per alias), or — without one — from no
trained model at all, scoring every series with the window baseline (its
own recent past); ``/readyz`` names the source. The watcher keeps asking
the registry and swaps the registry's version in once it answers.

Every registry request is bounded (:func:`registry_client`): at most
``settings.registry_timeout_s`` per request and one retry, so a registry that
does not answer costs seconds, not MLflow's default minutes. Reading never
creates a registry: a SQLite store whose file is missing is unreachable, not
empty. Whatever the store raises (MLflow, SQLAlchemy, HTTP, the file system)
becomes a :class:`ModelUnavailableError` here, so the callers fall back on
the cache.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from models.base import NotFittedError
from models.bundle import DetectorBundle
from serving.settings import Settings

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: What a registry (SQL database, tracking server, artifact store) raises when it is down.
REGISTRY_ERRORS = (MlflowException, SQLAlchemyError, requests.RequestException, OSError)


class ModelUnavailableError(LookupError):
    """The registry has no model to serve (unknown name or alias, unreachable store).

    ``missing`` is True when the registry answered that the model or alias does not exist.
    """

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A bundle with the registry coordinates it came from."""

    bundle: DetectorBundle
    name: str
    version: str
    alias: str
    loaded_at: float
    #: Where it came from: "registry", or why the service runs on something else.
    source: str = "registry"


def registry_client(settings: Settings) -> MlflowClient:
    """A client of ``settings.tracking_uri`` whose requests are bounded in time.

    MLflow's HTTP client and libpq read their limits from the environment; values
    already set there (``MLFLOW_HTTP_REQUEST_TIMEOUT``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``PGCONNECT_TIMEOUT``) win.

    Raises
    ------
    ModelUnavailableError
        The store is a SQLite file that does not exist (MLflow would create an empty one);
        ``missing`` when no model is cached for the alias either.
    """
    seconds = str(max(1, math.ceil(settings.registry_timeout_s)))
    for name, value in (("MLFLOW_HTTP_REQUEST_TIMEOUT", seconds),
                        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("PGCONNECT_TIMEOUT", seconds)):
        os.environ.setdefault(name, value)
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.is_file():
            # Without a cached model either, nothing was ever trained against this store.
            raise ModelUnavailableError(
                f"{database} does not exist (moved or deleted?), so the registry at {uri} "
                f"cannot be read; run `aiops train --data DIR` first, or set "
                f"MLFLOW_TRACKING_URI to the registry", missing=not _pointer(settings).is_file())
    return _ask(settings, "connect", lambda: MlflowClient(tracking_uri=uri, registry_uri=uri))


def _ask(settings: Settings, what: str, call: Callable[[], _T]) -> _T:
    """``call()`` against the registry, its failures as :class:`ModelUnavailableError`."""
    try:
        return call()
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelUnavailableError(
                f"no version of model {settings.model_name!r} has alias "
                f"{settings.model_alias!r} in {settings.tracking_uri}; run `aiops train "
                f"--data DIR` first ({error.message})", missing=True) from error
        raise ModelUnavailableError(f"the registry at {settings.tracking_uri} cannot be "
                                    f"read ({what}): {error.message}") from error
    except REGISTRY_ERRORS as error:
        detail = str(error).splitlines()[0][:300] if str(error) else ""
        raise ModelUnavailableError(f"the registry at {settings.tracking_uri} cannot be "
                                    f"read ({what}): {type(error).__name__}: {detail}") from error


def load_model(settings: Settings) -> LoadedModel:
    """Resolve ``models:/<name>@<alias>``, download it once into the cache and load the bundle.

    Raises
    ------
    ModelUnavailableError
        The alias is not set, the model does not exist or the store is unreachable.
    """
    client = registry_client(settings)
    version = _ask(settings, "alias", lambda: client.get_model_version_by_alias(
        settings.model_name, settings.model_alias))
    target = Path(settings.cache_dir) / settings.model_name / str(version.version)
    if not _find_bundle(target):
        target.mkdir(parents=True, exist_ok=True)
        # The version's own artifact location, read through this client: no global MLflow
        # state (tracking or registry URI) decides which store is read.
        source = _ask(settings, "download", lambda: client.get_model_version_download_uri(
            settings.model_name, version.version))
        _ask(settings, "download", lambda: mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(target), tracking_uri=settings.tracking_uri))
    bundle_dir = _find_bundle(target)
    if bundle_dir is None:
        raise ModelUnavailableError(f"version {version.version} of {settings.model_name!r} holds "
                                    "no detector bundle (artifacts/bundle/bundle.json)")
    bundle = DetectorBundle.load(bundle_dir)
    _log.info("loaded %s version %s (%d series) from %s", settings.model_name, version.version,
              len(bundle.series), settings.tracking_uri)
    _pointer(settings).write_text(json.dumps({"version": str(version.version),
                                              "bundle": str(bundle_dir.resolve())}))
    return LoadedModel(bundle, settings.model_name, str(version.version), settings.model_alias,
                       time.time())


def _find_bundle(root: Path) -> Path | None:
    """The folder holding ``bundle.json`` under a downloaded version, if any."""
    found = sorted(root.rglob("bundle/bundle.json"), key=lambda p: len(p.parts))
    return found[0].parent if found else None


def _pointer(settings: Settings) -> Path:
    """The cache's record of the version last loaded for the alias."""
    return Path(settings.cache_dir) / settings.model_name / f"{settings.model_alias}.json"


def start_model(settings: Settings) -> LoadedModel:
    """The model to start serving: the registry's, else the cached one, else none.

    Only an unreachable or broken registry falls back; an alias that is not set in a
    reachable registry is still an error (nothing was ever trained). With
    ``settings.start_from_cache`` the registry is not asked.
    """
    if settings.start_from_cache:
        reason = "not asked at start-up: it failed the service moments ago"
    else:
        try:
            return load_model(settings)
        except ModelUnavailableError as error:
            if error.missing:
                raise
            reason = str(error)
        except OSError as error:  # the cache itself
            reason = f"{type(error).__name__}: {error}"
    return cached_model(settings, reason)


def cached_model(settings: Settings, reason: str) -> LoadedModel:
    """The version last loaded for the alias, from the cache; else the window baseline."""
    pointer = _pointer(settings)
    try:
        cached = json.loads(pointer.read_text())
        bundle = DetectorBundle.load(cached["bundle"])
    except (OSError, ValueError, KeyError) as error:
        _log.error("registry unreachable (%s) and no cached model (%s): serving the window "
                   "baseline only", reason, error)
        return LoadedModel(DetectorBundle({}), settings.model_name, "none", settings.model_alias,
                           time.time(), source=f"window baseline only: registry unreachable "
                                               f"({reason[:200]}) and no cached model")
    _log.warning("registry unreachable (%s): serving cached version %s", reason,
                 cached["version"])
    return LoadedModel(bundle, settings.model_name, str(cached["version"]), settings.model_alias,
                       time.time(), source=f"cache: registry unreachable ({reason[:200]})")


def alias_target(settings: Settings) -> str:
    """The version the served alias points at now (one registry query)."""
    client = registry_client(settings)
    return str(_ask(settings, "alias", lambda: client.get_model_version_by_alias(
        settings.model_name, settings.model_alias)).version)


class ModelHolder:
    """The model being served; replaced whole, so a request sees one version throughout."""

    def __init__(self, model: LoadedModel | None = None) -> None:
        self.model = model
        self.last_error: str | None = None

    def require(self) -> LoadedModel:
        model = self.model
        if model is None:
            raise NotFittedError("no model is loaded yet; the service is starting")
        return model


class ModelWatcher:
    """Swaps a new version of the served alias into ``holder`` within ``interval_s``."""

    def __init__(self, settings: Settings, holder: ModelHolder) -> None:
        self.settings = settings
        self.holder = holder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Load and swap in the alias' version if it changed; True when a swap happened."""
        try:
            target = alias_target(self.settings)
            current = self.holder.model
            if current is not None and current.version == target and current.source == "registry":
                self.holder.last_error = None
                return False
            loaded = load_model(self.settings)
        except (ModelUnavailableError, OSError, ValueError) as error:
            self.holder.last_error = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {error}"
            _log.warning("model reload failed; still serving the loaded version: %s", error)
            return False
        previous = self.holder.model.version if self.holder.model else None
        self.holder.model = loaded
        self.holder.last_error = None
        _log.info("now serving %s version %s (was %s)", loaded.name, loaded.version, previous)
        return True

    def start(self) -> None:
        if self.settings.reload_interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_s):
            self.check()
