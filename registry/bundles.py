"""A served alias' bundle: resolved in the registry, downloaded once into a local cache.

Every registry request is bounded (:func:`client`): at most ``ref.timeout_s`` per request
and one retry, so a registry that does not answer costs seconds, not MLflow's default
minutes. Reading never creates a registry: a SQLite store whose file is missing is
unreachable, not empty. Whatever the store raises (MLflow, SQLAlchemy, HTTP, the file
system) becomes a :class:`ModelUnavailableError`, so that a caller can fall back on the
cache, where a pointer file per alias records the version last loaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from models.bundle import DetectorBundle

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
class ModelRef:
    """A registered model's alias in a store, and the local cache of its versions."""

    tracking_uri: str
    name: str
    alias: str
    cache_dir: Path
    timeout_s: float = 3.0

    @property
    def pointer(self) -> Path:
        """The cache's record of the version last loaded for the alias."""
        return Path(self.cache_dir) / self.name / f"{self.alias}.json"


def client(ref: ModelRef) -> MlflowClient:
    """A client of ``ref.tracking_uri`` whose requests are bounded in time.

    MLflow's HTTP client and libpq read their limits from the environment; values
    already set there (``MLFLOW_HTTP_REQUEST_TIMEOUT``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``PGCONNECT_TIMEOUT``) win.

    Raises
    ------
    ModelUnavailableError
        The store is a SQLite file that does not exist (MLflow would create an empty one);
        ``missing`` when no model is cached for the alias either.
    """
    seconds = str(max(1, math.ceil(ref.timeout_s)))
    for name, value in (("MLFLOW_HTTP_REQUEST_TIMEOUT", seconds),
                        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("PGCONNECT_TIMEOUT", seconds)):
        os.environ.setdefault(name, value)
    uri = ref.tracking_uri
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.is_file():
            # Without a cached model either, nothing was ever trained against this store.
            raise ModelUnavailableError(
                f"{database} does not exist (moved or deleted?), so the registry at {uri} "
                f"cannot be read; run `aiops train --data DIR` first, or set "
                f"MLFLOW_TRACKING_URI to the registry", missing=not ref.pointer.is_file())
    return ask(ref, "connect", lambda: MlflowClient(tracking_uri=uri, registry_uri=uri))


def ask(ref: ModelRef, what: str, call: Callable[[], _T]) -> _T:
    """``call()`` against the registry, its failures as :class:`ModelUnavailableError`."""
    try:
        return call()
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ModelUnavailableError(
                f"no version of model {ref.name!r} has alias {ref.alias!r} in "
                f"{ref.tracking_uri}; run `aiops train --data DIR` first ({error.message})",
                missing=True) from error
        raise ModelUnavailableError(f"the registry at {ref.tracking_uri} cannot be "
                                    f"read ({what}): {error.message}") from error
    except REGISTRY_ERRORS as error:
        detail = str(error).splitlines()[0][:300] if str(error) else ""
        raise ModelUnavailableError(f"the registry at {ref.tracking_uri} cannot be "
                                    f"read ({what}): {type(error).__name__}: {detail}") from error


def alias_target(ref: ModelRef) -> str:
    """The version the alias points at now (one registry query)."""
    registry = client(ref)
    return str(ask(ref, "alias", lambda: registry.get_model_version_by_alias(
        ref.name, ref.alias)).version)


def load_bundle(ref: ModelRef) -> tuple[str, DetectorBundle]:
    """Resolve ``models:/<name>@<alias>``, download it once into the cache, load its bundle.

    The cache's pointer then names this version, for :func:`cached_bundle`.

    Raises
    ------
    ModelUnavailableError
        The alias is not set, the model does not exist or the store is unreachable.
    """
    registry = client(ref)
    version = ask(ref, "alias", lambda: registry.get_model_version_by_alias(ref.name, ref.alias))
    target = Path(ref.cache_dir) / ref.name / str(version.version)
    if not _find_bundle(target):
        target.mkdir(parents=True, exist_ok=True)
        # The version's own artifact location, read through this client: no global MLflow
        # state (tracking or registry URI) decides which store is read.
        source = ask(ref, "download", lambda: registry.get_model_version_download_uri(
            ref.name, version.version))
        ask(ref, "download", lambda: mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(target), tracking_uri=ref.tracking_uri))
    bundle_dir = _find_bundle(target)
    if bundle_dir is None:
        raise ModelUnavailableError(f"version {version.version} of {ref.name!r} holds "
                                    "no detector bundle (artifacts/bundle/bundle.json)")
    bundle = DetectorBundle.load(bundle_dir)
    _log.info("loaded %s version %s (%d series) from %s", ref.name, version.version,
              len(bundle.series), ref.tracking_uri)
    ref.pointer.write_text(json.dumps({"version": str(version.version),
                                       "bundle": str(bundle_dir.resolve())}))
    return str(version.version), bundle


def cached_bundle(ref: ModelRef) -> tuple[str, DetectorBundle]:
    """The version last loaded for the alias, from the cache alone.

    Raises
    ------
    OSError, ValueError, KeyError
        No version was loaded into this cache, or its files are unreadable.
    """
    cached: dict[str, Any] = json.loads(ref.pointer.read_text())
    return str(cached["version"]), DetectorBundle.load(cached["bundle"])


def _find_bundle(root: Path) -> Path | None:
    """The folder holding ``bundle.json`` under a downloaded version, if any."""
    found = sorted(root.rglob("bundle/bundle.json"), key=lambda p: len(p.parts))
    return found[0].parent if found else None
