"""Start-up when the model registry is unreachable: the cached champion, else the baseline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.loader import ModelUnavailableError, start_model
from serving.settings import Settings
from tests.conftest import free_port
from tests.serving.conftest import daily_series, register_champion, window_body


@pytest.fixture
def registered(loaded_model, mlflow_backend_store, tmp_path) -> Settings:
    """The conftest bundle registered as version 1, alias champion, in a real store
    (SQLite, and PostgreSQL when it is installed)."""
    register_champion(loaded_model.bundle, mlflow_backend_store, "startup-test", tmp_path)
    return Settings(model_name="startup-test", tracking_uri=mlflow_backend_store,
                    cache_dir=tmp_path / "cache")


@pytest.fixture
def unreachable(monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return f"http://127.0.0.1:{free_port()}"


def test_the_cached_champion_serves_when_the_registry_is_down(registered, unreachable):
    first = start_model(registered)
    assert first.source == "registry" and first.version == "1"

    down = dataclasses.replace(registered, tracking_uri=unreachable)
    cached = start_model(down)
    assert cached.version == "1" and cached.source.startswith("cache: registry unreachable")
    client = TestClient(create_app(down, cached))
    ready = client.get("/readyz").json()
    assert ready["model"]["version"] == "1" and ready["model_source"].startswith("cache")
    window = daily_series(288 * 6, seed=1).iloc[-60:]
    scored = client.post("/v1/score", json={"series": [window_body(window)]}).json()
    assert scored["results"][0]["known_series"] is True


def test_without_a_cache_the_service_starts_on_the_window_baseline(tmp_path, unreachable):
    settings = Settings(model_name="startup-test", tracking_uri=unreachable,
                        cache_dir=tmp_path / "empty-cache")
    model = start_model(settings)
    assert model.version == "none" and "window baseline only" in model.source
    client = TestClient(create_app(settings, model))
    assert "window baseline only" in client.get("/readyz").json()["model_source"]
    window = daily_series(288 * 6, seed=1).iloc[-60:]
    result = client.post("/v1/score", json={"series": [window_body(window)]}).json()["results"][0]
    assert result["known_series"] is False and len(result["scores"]) == 60


def test_a_reachable_registry_without_the_model_is_still_an_error(mlflow_backend_store, tmp_path):
    settings = Settings(model_name="never-trained", tracking_uri=mlflow_backend_store,
                        cache_dir=tmp_path / "cache")
    with pytest.raises(ModelUnavailableError, match="run `aiops train"):
        start_model(settings)
    assert not Path(tmp_path / "cache").exists() or not any(Path(tmp_path / "cache").rglob("*.json"))
