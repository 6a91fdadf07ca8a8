"""The service's answers exported on /metrics: scores, forecast quantiles, replicas."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.observability import VerdictMetrics
from serving.security import TokenStore, new_token
from serving.settings import Settings
from tests.serving.conftest import daily_series, window_body


def samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric family on /metrics, keyed by their sorted labels."""
    text = client.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_newest_score_of_each_scored_series_is_exported(client):
    window = daily_series(288 * 6, seed=1).iloc[-120:].copy()
    window.iloc[-1] = window.iloc[-1] + 500  # the newest point is far out
    body = {"series": [window_body(window, "web", "cpu"),
                       window_body(daily_series(288, seed=2).iloc[-60:], "db", "latency")]}
    response = client.post("/v1/score", json=body).json()
    exported = samples(client, "aiops_anomaly_score")
    for result in response["results"]:
        key = (("metric", result["metric"]), ("service", result["service"]))
        assert exported[key] == pytest.approx(result["scores"][-1])
    assert exported[(("metric", "cpu"), ("service", "web"))] > 0.99


def test_forecast_quantiles_are_exported_at_fixed_distances_ahead(client):
    # 5-minute steps: 5 min is row 0, 15 min row 2, 1 h row 11.
    response = client.post("/v1/forecast", json={"service": "web", "metric": "cpu",
                                                  "horizon": 24}).json()
    exported = samples(client, "aiops_forecast")
    for horizon, row in (("5m", 0), ("15m", 2), ("1h", 11)):
        for quantile in ("q10", "q50", "q90"):
            key = (("horizon", horizon), ("metric", "cpu"), ("quantile", quantile),
                   ("service", "web"))
            assert exported[key] == pytest.approx(response[quantile][row], abs=1e-5)


def test_a_short_forecast_exports_only_the_distances_it_reaches(client):
    client.post("/v1/forecast", json={"service": "web", "metric": "cpu", "horizon": 3})
    horizons = {dict(key)["horizon"] for key in samples(client, "aiops_forecast")}
    assert horizons == {"5m", "15m"}


def test_recommended_replicas_are_exported_per_service(client):
    recent = daily_series(288 * 2, seed=3)
    body = {"service": "web", "metric": "cpu", "capacity_per_replica": 10,
            "current_replicas": 2, "horizon": 24,
            "history": {k: v for k, v in window_body(recent).items()
                        if k in ("timestamps", "values")}}
    answer = client.post("/v1/recommendations", json=body).json()
    assert samples(client, "aiops_recommended_replicas") == {
        (("service", "web"),): answer["replicas"]}


def test_a_caller_inventing_series_cannot_keep_trained_series_off_metrics(settings,
                                                                          loaded_model):
    """One token sends more invented series than the export cap; trained series still show."""
    inventor, inventor_entry = new_token("inventor", ["score"])
    other, other_entry = new_token("other", ["score"])
    shipped = Settings()
    served = settings.replace(tokens=TokenStore([inventor_entry, other_entry]),
                                 max_series_per_request=shipped.max_series_per_request)
    client = TestClient(create_app(served, loaded_model))
    window = daily_series(288, seed=4).iloc[-20:]
    invented = {"series": [window_body(window, f"svc{i}", "cpu")
                           for i in range(shipped.max_exported_series)]}
    bearer = {"authorization": f"Bearer {inventor}"}
    assert client.post("/v1/score", json=invented, headers=bearer).status_code == 200
    trained = daily_series(288 * 6, seed=1).iloc[-60:]
    for name, token in (("inventor", inventor), ("other", other)):
        body = {"series": [window_body(trained, "web", "cpu"),
                           window_body(window, f"{name}-new", "cpu")]}
        assert client.post("/v1/score", json=body,
                           headers={"authorization": f"Bearer {token}"}).status_code == 200
    services = {dict(key)["service"] for key in samples(client, "aiops_anomaly_score")}
    assert "web" in services
    assert "other-new" in services, "another caller's new series is exported too"
    assert len(services - {"web"}) <= shipped.max_exported_series_per_caller + 1


def test_series_beyond_the_cap_evict_the_least_recently_updated(settings, loaded_model):
    client = TestClient(create_app(settings.replace(max_exported_series=3),
                                   loaded_model))
    window = daily_series(288, seed=4).iloc[-30:]
    forecast = {"service": "web", "metric": "cpu", "horizon": 24}
    assert client.post("/v1/forecast", json=forecast).status_code == 200  # trained
    for names in (["svc0", "svc1"], ["svc0"], ["svc2", "svc3"]):
        body = {"series": [window_body(window, name, "cpu") for name in names]}
        assert client.post("/v1/score", json=body).status_code == 200
    # svc1 was updated least recently, then svc0: both evicted, their label sets removed.
    assert {dict(k)["service"] for k in samples(client, "aiops_anomaly_score")} == {
        "svc2", "svc3"}
    assert {dict(k)["service"] for k in samples(client, "aiops_forecast")} == {"web"}
    assert samples(client, "aiops_verdict_series_evicted_total") == {(): 2.0}
    # A trained series takes a slot from the oldest invented one, never the other way round.
    trained = {"series": [window_body(daily_series(288 * 6, seed=1).iloc[-60:], "web", "cpu")]}
    assert client.post("/v1/score", json=trained).status_code == 200
    for name in ("svc4", "svc5", "svc6"):
        client.post("/v1/score", json={"series": [window_body(window, name, "cpu")]})
    exported = {dict(k)["service"] for k in samples(client, "aiops_anomaly_score")}
    assert exported == {"web", "svc5", "svc6"}
    assert {dict(k)["service"] for k in samples(client, "aiops_forecast")} == {"web"}


def test_verdicts_are_refused_only_when_trained_series_fill_the_cap():
    board = VerdictMetrics(max_series=1, max_series_per_caller=1)
    board.set_score("web", "cpu", 0.5, trained=True, caller="a")
    board.set_score("svc0", "cpu", 0.9, trained=False, caller="a")
    board.set_replicas("web", 2, trained=True, caller="a")
    board.set_replicas("svc0", 3, trained=False, caller="a")
    text = board.render().decode()
    assert 'aiops_anomaly_score{metric="cpu",service="web"} 0.5' in text
    assert "svc0" not in text
    assert "aiops_verdict_series_dropped_total 2.0" in text


def test_replica_count_without_a_live_config_is_a_clear_404(client):
    response = client.get("/v1/recommendations/web/replicas")
    assert response.status_code == 404
    assert "AIOPS_LIVE_CONFIG" in response.json()["detail"]
