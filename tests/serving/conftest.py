"""A small bundle fitted in-process, served by the plain FastAPI app (no Ray, no MLflow)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from models import DynamicThresholdDetector, StaticThresholdDetector
from models.bundle import DetectorBundle
from models.forecast import SeasonalNaiveForecaster
from serving.app import create_app
from serving.loader import LoadedModel
from serving.settings import Settings

STEP = pd.Timedelta("5min")


def daily_series(n_points: int, start: str = "2026-01-05", seed: int = 0) -> pd.Series:
    index = pd.date_range(start, periods=n_points, freq=STEP, tz="UTC")
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(n_points) / 288
    return pd.Series(50 + 20 * np.sin(phase) + rng.normal(0, 1.5, n_points), index=index)


def window_body(series: pd.Series, service: str = "web", metric: str = "cpu") -> dict:
    return {
        "service": service,
        "metric": metric,
        "timestamps": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in series.index],
        "values": [None if np.isnan(v) else float(v) for v in series.to_numpy()],
    }


def non_finite_numbers(body, nullable: set[str] | None = None, path: str = "") -> list[str]:
    """Paths of an answer's numbers that are not finite, and of its nulls outside ``nullable``.

    ``nullable``: the field names under which a null is documented (None: nulls not reported).
    """
    if isinstance(body, dict):
        return [p for k, v in body.items() for p in non_finite_numbers(v, nullable, f"{path}.{k}")]
    if isinstance(body, list):
        return [p for i, v in enumerate(body)
                for p in non_finite_numbers(v, nullable, f"{path}.{i}")]
    if body is None and nullable is not None:
        return [] if nullable & set(path.split(".")) else [path]
    if isinstance(body, float) and not math.isfinite(body):
        return [path]
    return []


@pytest.fixture(scope="session")
def history() -> pd.Series:
    return daily_series(288 * 5)


@pytest.fixture(scope="session")
def loaded_model(history: pd.Series) -> LoadedModel:
    detectors = {
        "static_threshold": StaticThresholdDetector().fit(history),
        "dynamic_threshold": DynamicThresholdDetector().fit(history),
    }
    forecaster = SeasonalNaiveForecaster(SeasonalNaiveForecaster.config_class(max_horizon=288))
    bundle = DetectorBundle({("web", "cpu"): detectors},
                            forecasters={("web", "cpu"): forecaster.fit(history)})
    return LoadedModel(bundle, "test-detectors", "3", "champion", time.time())


@pytest.fixture
def settings(tmp_path) -> Settings:
    # A store no test of the plain app should need; in a temporary folder if one does.
    return Settings(tracking_uri=f"sqlite:///{tmp_path / 'unused.db'}",
                    max_points_per_series=2000, max_series_per_request=5)


@pytest.fixture
def live_window():
    """The day after the training history, with one planted spike."""
    window = daily_series(288 * 6, seed=1).iloc[-360:].copy()
    window.iloc[200] += 40
    return window


@pytest.fixture
def client(settings: Settings, loaded_model: LoadedModel) -> TestClient:
    return TestClient(create_app(settings, loaded_model), raise_server_exceptions=False)


def register_champion(bundle: DetectorBundle, store_uri: str, name: str, folder: Path) -> None:
    """Register ``bundle`` as version 1 of ``name`` with alias champion in a real store."""
    from mlflow.tracking import MlflowClient

    source = folder / "model"
    bundle.save(source / "artifacts" / "bundle")
    client = MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)
    client.create_registered_model(name)
    client.create_model_version(name, source=str(source))
    client.set_registered_model_alias(name, "champion", "1")
