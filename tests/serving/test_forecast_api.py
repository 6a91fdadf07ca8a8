"""POST /v1/forecast on the in-process app: known series, unknown ones, bad requests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import daily_series, window_body


def history_body(series: pd.Series) -> dict:
    body = window_body(series)
    return {"timestamps": body["timestamps"], "values": body["values"]}


def test_known_series_is_forecast_from_the_history_sent(client, history):
    recent = daily_series(288 * 7, seed=4).iloc[-600:]
    response = client.post("/v1/forecast", json={"service": "web", "metric": "cpu",
                                                  "horizon": 48, "history": history_body(recent)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == "3" and body["known_series"] is True
    assert body["forecaster"] == "seasonal_naive"
    assert len(body["timestamps"]) == len(body["yhat"]) == len(body["q90"]) == 48
    assert pd.Timestamp(body["timestamps"][0]) == recent.index[-1] + pd.Timedelta("5min")
    # Seasonal naive: one day before each target.
    np.testing.assert_allclose(body["yhat"], recent.iloc[-288:-240].to_numpy(), atol=1e-5)
    assert all(lo <= mid <= hi for lo, mid, hi in zip(body["q10"], body["q50"], body["q90"],
                                                       strict=True))


def test_without_history_a_known_series_is_forecast_from_its_training_data(client, history):
    body = client.post("/v1/forecast", json={"service": "web", "metric": "cpu",
                                             "horizon": 3}).json()
    assert pd.Timestamp(body["timestamps"][0]) == history.index[-1] + pd.Timedelta("5min")


def test_unknown_series_is_forecast_from_its_own_history(client):
    recent = daily_series(288 * 3, seed=5)
    body = client.post("/v1/forecast", json={"service": "new", "metric": "rps", "horizon": 12,
                                             "history": history_body(recent)}).json()
    assert body["known_series"] is False and body["forecaster"] == "seasonal_naive"
    assert len(body["yhat"]) == 12
    assert "a seasonal naive model fitted on the 864 points sent" in body["note"]
    assert "one day before" in body["note"]


def test_too_little_history_falls_back_to_the_last_value_and_says_so(client):
    recent = daily_series(100, seed=5)  # eight hours: no daily cycle can be found
    body = client.post("/v1/forecast", json={"service": "new", "metric": "rps", "horizon": 4,
                                             "history": history_body(recent)}).json()
    assert "no daily or weekly cycle found" in body["note"]
    assert body["yhat"] == pytest.approx([recent.iloc[-1]] * 4, abs=1e-5)


def test_gaps_in_the_history_are_allowed(client):
    recent = daily_series(288 * 3, seed=7)
    recent.iloc[-300:-250] = np.nan
    response = client.post("/v1/forecast", json={"service": "web", "metric": "cpu",
                                                  "horizon": 24, "history": history_body(recent)})
    assert response.status_code == 200, response.text
    assert all(np.isfinite(response.json()["yhat"]))


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"service": "new", "metric": "rps", "horizon": 5}, 422, "send its history"),
        ({"service": "web", "metric": "cpu", "horizon": 289}, 422, "horizon=289"),
        ({"service": "web", "metric": "cpu", "horizon": 0}, 422, "horizon"),
        ({"service": "web", "metric": "cpu", "horizon": 5,
          "history": {"timestamps": ["2026-01-05T00:00:00"], "values": [1.0]}}, 422, "timezone"),
        ({"service": "new", "metric": "rps", "horizon": 5,
          "history": {"timestamps": ["2026-01-05T00:00:00Z", "2026-01-05T00:05:00Z"],
                      "values": [1.0, 2.0]}}, 422, "new/rps"),
    ],
)
def test_bad_forecast_requests_are_4xx_naming_the_problem(client, payload, status, message):
    response = client.post("/v1/forecast", json=payload)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"])
    assert response.json()["request_id"]


def test_a_history_past_the_limit_is_413(client):
    long = daily_series(2001)
    response = client.post("/v1/forecast", json={"service": "web", "metric": "cpu", "horizon": 5,
                                                  "history": history_body(long)})
    assert response.status_code == 413
    assert "history has 2001 points" in response.json()["detail"]


def test_recommendations_scale_ahead_of_the_daily_peak(client):
    recent = daily_series(288 * 3, seed=6)  # 50 ± 20, peak at 06:00 each day
    body = {"service": "web", "metric": "cpu", "history": history_body(recent), "horizon": 288,
            "capacity_per_replica": 10, "target_utilisation": 0.5, "current_replicas": 5,
            "min_replicas": 2, "max_replicas": 20, "lead_time_s": 600, "priority": 2}
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    replicas = [s["replicas"] for s in answer["schedule"]]
    assert len(replicas) == 288 and answer["replicas"] == replicas[0]
    assert max(replicas) >= 14 and min(replicas) <= 8  # ~70 at the peak, ~30 at the trough
    assert "tier 2 (financial transactions) provisions for q90" in answer["reason"]
    assert answer["forecaster"] == "seasonal_naive" and answer["model"]["version"] == "3"


def test_a_scheduled_event_raises_the_schedule(client):
    recent = daily_series(288 * 3, seed=6)
    start = recent.index[-1] + pd.Timedelta("1h")
    base = {"service": "web", "metric": "cpu", "history": history_body(recent), "horizon": 48,
            "capacity_per_replica": 10, "current_replicas": 5, "lead_time_s": 0,
            "stabilisation_s": 0}
    plain = client.post("/v1/recommendations", json=base).json()
    event = {"start": start.isoformat(), "end": (start + pd.Timedelta("1h")).isoformat(),
             "multiplier": 3}
    raised = client.post("/v1/recommendations", json={**base, "events": [event]}).json()
    during = [i for i, s in enumerate(raised["schedule"])
              if start <= pd.Timestamp(s["timestamp"]) < start + pd.Timedelta("1h")]
    assert during and all(raised["schedule"][i]["replicas"] > plain["schedule"][i]["replicas"]
                          for i in during)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"capacity_per_replica": 0}, "capacity_per_replica"),
        ({"capacity_per_replica": -1}, "capacity_per_replica"),
        ({"min_replicas": 9, "max_replicas": 3}, "min_replicas=9 is above max_replicas=3"),
        ({"priority": 7}, "priority"),
        ({"target_utilisation": 0.8, "peak_utilisation": 0.6},
         "peak_utilisation=0.6 is below target_utilisation=0.8"),
        ({"events": [{"start": "2026-01-05T10:00:00Z", "end": "2026-01-05T09:00:00Z",
                      "multiplier": 2}]}, "is not after its start"),
    ],
)
def test_bad_recommendation_requests_are_422(client, change, message):
    body = {"service": "web", "metric": "cpu", "capacity_per_replica": 10,
            "current_replicas": 1, **change}
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


def test_cluster_plan_and_rightsizing_endpoints(client):
    plan = client.post("/v1/cluster-plan", json={"total_cpu": 4, "services": [
        {"service": "auth", "priority": 1, "needed_replicas": 3},
        {"service": "reports", "priority": 5, "needed_replicas": 3}]}).json()
    got = {a["service"]: a["allocated_replicas"] for a in plan["allocations"]}
    assert got == {"auth": 3, "reports": 1} and plan["cpu_short"] == 2
    sized = client.post("/v1/rightsizing", json={"items": [
        {"service": "db", "resource": "cpu", "current_request": 4, "usage": [0.5] * 50,
         "price_per_unit": 1}]}).json()
    assert sized["under_used"] == ["db/cpu"] and sized["total_saving"] > 3
    bad = client.post("/v1/rightsizing", json={"items": [
        {"service": "db", "resource": "disk", "current_request": 4, "usage": [1] * 20}]})
    assert bad.status_code == 422 and "resource" in str(bad.json()["detail"])
