"""Where MLflow keeps runs and models, and the registry operations training needs.

By default the tracking store is a SQLite database at ``mlruns/mlflow.db``
and artifacts live in ``mlruns/artifacts`` (MLflow 3 refuses a plain file
store). ``MLFLOW_TRACKING_URI`` points elsewhere, for example at a shared
tracking server. With a database URI other than SQLite (PostgreSQL without a
server in between), ``AIOPS_ARTIFACT_ROOT`` says where new experiments keep
their artifacts; MLflow's own default would be ``./mlruns`` of whatever
folder the process happens to run in.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from registry import DEFAULT_MODEL_NAME
from registry.aliases import CHALLENGER, CHAMPION, alias_version

_log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "novaevo-aiops"
#: Artifact root of new experiments, for database stores that have no server to choose one.
ARTIFACT_ROOT_ENV = "AIOPS_ARTIFACT_ROOT"


def default_tracking_uri(root: str | Path = "mlruns") -> str:
    """``sqlite:///<abs root>/mlflow.db``, the store used when no URI is configured."""
    path = Path(root).resolve()
    return f"sqlite:///{path / 'mlflow.db'}"


def configure_tracking(root: str | Path = "mlruns") -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` or the local SQLite store; returns the URI."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts; None lets the store decide.

    ``$AIOPS_ARTIFACT_ROOT`` when set (a URI such as ``s3://bucket/mlflow``, or a
    folder), else beside a SQLite store (``<dir>/artifacts``); a tracking server
    chooses its own.
    """
    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if root:
        return root if "://" in root else Path(root).resolve().as_uri()
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    return (database.parent / "artifacts").resolve().as_uri()


def ensure_experiment(name: str = DEFAULT_EXPERIMENT) -> str:
    """The id of experiment ``name``, created with a local artifact root when needed."""
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    uri = mlflow.get_tracking_uri()
    location = artifact_location(uri)
    if location is None and _is_database(uri):
        _log.warning("experiment %r keeps its artifacts in MLflow's default ./mlruns of %s; "
                     "set %s (e.g. s3://bucket/mlflow) or use a tracking server",
                     name, Path.cwd(), ARTIFACT_ROOT_ENV)
    return client.create_experiment(name, artifact_location=location)


def _is_database(tracking_uri: str) -> bool:
    """A SQLAlchemy URI (``postgresql+psycopg2://``, ``mysql://`` …), not a server or folder."""
    scheme = tracking_uri.partition("://")[0].partition("+")[0]
    return scheme in {"postgresql", "mysql", "mssql", "sqlite"}

__all__ = ["ARTIFACT_ROOT_ENV", "CHALLENGER", "CHAMPION", "DEFAULT_EXPERIMENT",
           "DEFAULT_MODEL_NAME", "alias_version", "artifact_location", "configure_tracking",
           "default_tracking_uri", "ensure_experiment"]
