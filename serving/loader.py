"""Loading the served model from the MLflow registry into a local cache."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from models.bundle import DetectorBundle
from serving.settings import Settings

_log = logging.getLogger(__name__)


class ModelUnavailableError(LookupError):
    """The registry has no model to serve (unknown name or alias, unreachable store)."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A bundle with the registry coordinates it came from."""

    bundle: DetectorBundle
    name: str
    version: str
    alias: str
    loaded_at: float


def load_model(settings: Settings) -> LoadedModel:
    """Resolve ``models:/<name>@<alias>``, download it once into the cache and load the bundle.

    Raises
    ------
    ModelUnavailableError
        The alias is not set, the model does not exist or the store is unreachable.
    """
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        version = client.get_model_version_by_alias(settings.model_name, settings.model_alias)
    except MlflowException as error:
        raise ModelUnavailableError(
            f"no version of model {settings.model_name!r} has alias {settings.model_alias!r} in "
            f"{settings.tracking_uri}; run `aiops train --data DIR` first ({error.message})"
        ) from error
    target = Path(settings.cache_dir) / settings.model_name / str(version.version)
    bundle_dir = target / "artifacts" / "bundle"
    if not (bundle_dir / "bundle.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{settings.model_name}/{version.version}",
            dst_path=str(target),
            tracking_uri=settings.tracking_uri,
        )
    bundle = DetectorBundle.load(bundle_dir)
    _log.info("loaded %s version %s (%d series) from %s", settings.model_name, version.version,
              len(bundle.series), settings.tracking_uri)
    return LoadedModel(bundle, settings.model_name, str(version.version), settings.model_alias,
                       time.time())
