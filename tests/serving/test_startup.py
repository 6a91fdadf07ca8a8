"""Start-up when the model registry is unreachable: the cached champion, else the baseline."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.loader import ModelUnavailableError, start_model
from serving.ports import free_port
from serving.settings import Settings
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

    down = registered.replace(tracking_uri=unreachable)
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


@pytest.fixture
def cached(loaded_model, mlflow_store, tmp_path) -> Settings:
    """Version 1 registered in a SQLite store and loaded once, so the cache holds it."""
    register_champion(loaded_model.bundle, mlflow_store, "startup-test", tmp_path)
    settings = Settings(model_name="startup-test", tracking_uri=mlflow_store,
                        cache_dir=tmp_path / "cache")
    assert start_model(settings).source == "registry"
    return settings


def _no_answer_server() -> tuple[socket.socket, str]:
    """A TCP port that accepts connections and never answers (a registry that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


def _start_timed(settings: Settings):
    started = time.monotonic()
    model = start_model(settings)
    return model, time.monotonic() - started


def test_a_moved_sqlite_registry_starts_from_the_cache_and_is_not_recreated(cached):
    database = Path(cached.tracking_uri.removeprefix("sqlite:///"))
    database.rename(database.with_name("moved.db"))
    model, seconds = _start_timed(cached)
    assert model.version == "1" and model.source.startswith("cache: registry unreachable")
    assert "does not exist" in model.source
    assert not database.exists(), "reading the registry must not create an empty one"
    assert seconds < 30


@pytest.mark.parametrize("damage", ["header", "pages"])
def test_a_corrupt_sqlite_registry_starts_from_the_cache(cached, damage):
    """A copy under a new name, so that the process opens it afresh, as a new service does."""
    original = Path(cached.tracking_uri.removeprefix("sqlite:///")).read_bytes()
    broken = (b"x" * 100 + original[100:] if damage == "header"
              else original[:8192] + bytes(len(original) - 16384) + original[-8192:])
    database = Path(cached.tracking_uri.removeprefix("sqlite:///")).with_name("broken.db")
    database.write_bytes(broken)
    model, seconds = _start_timed(cached.replace(tracking_uri=f"sqlite:///{database}"))
    assert model.version == "1" and model.source.startswith("cache: registry unreachable")
    assert "DatabaseError" in model.source
    assert seconds < 30


@pytest.mark.parametrize("registry", ["refused", "no answer"])
def test_an_unreachable_http_registry_starts_from_the_cache_in_seconds(cached, registry):
    """With the shipped limits (no MLflow variables set): MLflow's own retries took minutes."""
    hanging = None
    if registry == "refused":
        uri = f"http://127.0.0.1:{free_port()}"
    else:
        hanging, uri = _no_answer_server()
    try:
        model, seconds = _start_timed(cached.replace(tracking_uri=uri))
    finally:
        if hanging is not None:
            hanging.close()
    assert model.version == "1" and model.source.startswith("cache: registry unreachable")
    # One request and one retry, each at most registry_timeout_s, and a second between.
    assert seconds < 2 * cached.registry_timeout_s + 3


def test_reload_with_the_registry_down_answers_503_in_seconds(cached):
    from serving.loader import ModelHolder, ModelWatcher

    hanging, uri = _no_answer_server()
    try:
        down = cached.replace(tracking_uri=uri)
        holder = ModelHolder(start_model(cached))
        client = TestClient(create_app(down, holder=holder, watcher=ModelWatcher(down, holder)))
        started = time.monotonic()
        response = client.post("/v1/admin/reload")
        seconds = time.monotonic() - started
    finally:
        hanging.close()
    assert response.status_code == 503 and "still serving 1" in response.json()["detail"]
    assert seconds < 2 * down.registry_timeout_s + 3
