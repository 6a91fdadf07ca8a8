"""Fixtures shared by the whole suite: a small seeded fleet, one Ray per session, MLflow stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from features.store import write_dataset
from features.synth import FleetConfig, generate_fleet

pytest_plugins = ["tests.servers", "tests.postgres"]

# Progress bars from MLflow's artifact downloads only clutter test output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

#: Small enough to train in seconds, long enough for daily seasonality and every incident kind.
SMALL_FLEET = FleetConfig(n_services=2, days=4.0, step="5min", seed=7, incidents_per_service=5)


@pytest.fixture(scope="session")
def small_fleet() -> pd.DataFrame:
    return generate_fleet(SMALL_FLEET)


@pytest.fixture(scope="session")
def fleet_dataset(small_fleet: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet") / "data"
    write_dataset(small_fleet, root)
    return root


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray for every test that needs it (training fan-out, Serve).

    Serve runs behind HAProxy, as ``aiops serve`` does: Ray reads that when it starts.
    """
    import ray

    from serving.deployment import configure_ingress
    from serving.settings import Settings

    if not ray.is_initialized():
        configure_ingress(Settings(cache_dir=tmp_path_factory.mktemp("serve"),
                                   tracking_uri="sqlite:///unused.db"))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway SQLite tracking store (artifacts beside it) for one test."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
