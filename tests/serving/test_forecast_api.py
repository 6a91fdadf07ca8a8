"""POST /v1/forecast on the in-process app: known series, unknown ones, bad requests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import daily_series, non_finite_numbers, window_body


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


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"capacity_per_replica": 5e-324}, "capacity_per_replica"),
        ({"capacity_per_replica": 1e308}, "capacity_per_replica"),
        ({"events": [{"start": "2026-01-10T00:00:00Z", "end": "2026-01-12T00:00:00Z",
                      "multiplier": 1e308}]}, "events.0.multiplier"),
        ({"events": [{"start": "9999-01-10T00:00:00Z", "end": "9999-01-12T00:00:00Z",
                      "multiplier": 2}]}, "events.0.start"),
        ({"target_utilisation": 5e-324, "peak_utilisation": 5e-324}, "target_utilisation"),
        ({"current_replicas": 10**7}, "current_replicas"),
        ({"max_replicas": 10**6}, "max_replicas"),
    ],
)
def test_recommendation_figures_out_of_bounds_are_422_naming_the_field(client, change, field):
    body = {"service": "web", "metric": "cpu", "capacity_per_replica": 10,
            "current_replicas": 1, "horizon": 12, **change}
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0].startswith(f"{field}: "), response.json()


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/cluster-plan", {"total_cpu": 10, "services": [
            {"service": "a", "priority": 1, "needed_replicas": 5,
             "cpu_per_replica": 1.797e308}]}, "services.0.cpu_per_replica"),
        ("/v1/cluster-plan", {"total_cpu": 10, "services": [
            {"service": "a", "priority": 1, "needed_replicas": 2_000_000}]},
         "services.0.needed_replicas"),
        ("/v1/rightsizing", {"items": [{"service": "db", "resource": "memory",
                                        "current_request": 4, "usage": [1.7e308] * 10}]},
         "items.0.usage.0"),
        ("/v1/rightsizing", {"items": [{"service": "db", "resource": "cpu",
                                        "current_request": 4, "usage": [1.0] * 9 + [-1.0]}]},
         "items.0.usage.9"),
        ("/v1/rightsizing", {"items": [{"service": "db", "resource": "cpu",
                                        "current_request": 1.7e308, "usage": [1.0] * 10}]},
         "items.0.current_request"),
        ("/v1/rightsizing", {"items": [{"service": "db", "resource": "cpu",
                                        "current_request": 4, "usage": [1.0] * 10,
                                        "price_per_unit": 1e308}]}, "items.0.price_per_unit"),
        ("/v1/forecast", {"service": "web", "metric": "cpu", "horizon": 5, "history": {
            "timestamps": ["0001-01-01T00:00:00Z"], "values": [1.0]}}, "history.timestamps.0"),
    ],
)
def test_figures_out_of_bounds_are_422_naming_the_field(client, route, body, field):
    response = client.post(route, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0].startswith(f"{field}: "), response.json()


def test_answers_at_the_accepted_extremes_hold_only_finite_numbers(client):
    from models.capacity import (
        MAX_CPU_PER_REPLICA,
        MAX_EVENT_MULTIPLIER,
        MAX_QUANTITY,
        MAX_TOTAL_CPU,
        MIN_CAPACITY_PER_REPLICA,
    )

    recent = daily_series(288 * 3, seed=6)
    extreme = recent.copy()
    extreme[:] = np.where(np.arange(len(recent)) % 2, MAX_QUANTITY, -MAX_QUANTITY)
    start = recent.index[-1] + pd.Timedelta("5min")
    event = {"start": start.isoformat(), "end": (start + pd.Timedelta("1D")).isoformat(),
             "multiplier": MAX_EVENT_MULTIPLIER}
    answers = []
    for service in ("web", "new"):  # a trained forecaster, and the fallback
        for history in (recent, extreme):
            answers.append(client.post("/v1/recommendations", json={
                "service": service, "metric": "cpu", "history": history_body(history),
                "horizon": 288, "capacity_per_replica": MIN_CAPACITY_PER_REPLICA,
                "current_replicas": 1, "events": [event]}))
            answers.append(client.post("/v1/forecast", json={
                "service": service, "metric": "cpu", "history": history_body(history),
                "horizon": 288}))
            answers.append(client.post("/v1/score", json={"series": [
                window_body(history.iloc[-300:], service=service)]}))
    answers.append(client.post("/v1/cluster-plan", json={"total_cpu": MAX_TOTAL_CPU, "services": [
        {"service": f"s{i}", "priority": 1 + i % 5, "needed_replicas": 1_000_000,
         "min_replicas": 1_000_000, "cpu_per_replica": MAX_CPU_PER_REPLICA}
        for i in range(5)]}))
    answers.append(client.post("/v1/rightsizing", json={"items": [
        {"service": "db", "resource": resource, "current_request": MAX_QUANTITY,
         "usage": [0.0] * 5 + [MAX_QUANTITY] * 5, "price_per_unit": 1e9}
        for resource in ("cpu", "memory")]}))
    for response in answers:
        assert response.status_code == 200, response.text
        # A gap has no score; a forecast has a note or none: no other null is documented.
        assert non_finite_numbers(response.json(), nullable={"scores", "note"}) == [], \
            response.text[:500]


def test_a_forecast_running_past_the_last_supported_timestamp_is_422_naming_horizon(client):
    late = daily_series(288, start="2261-12-31T00:00:00Z")
    response = client.post("/v1/forecast", json={
        "service": "new", "metric": "rps", "horizon": 100_000, "history": history_body(late)})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        "new/rps: horizon=100000 steps after 2261-12-31T23:55:00+00:00 run past 2262-04-11, "
        "the last timestamp supported; ask for fewer steps")
    within = client.post("/v1/forecast", json={"service": "new", "metric": "rps", "horizon": 288,
                                                "history": history_body(late)})
    assert within.status_code == 200 and within.json()["timestamps"][-1] == "2262-01-01T23:55:00Z"


@pytest.mark.parametrize("service", ["web", "new"])
def test_a_history_that_is_mostly_gaps_is_413_not_a_grid_of_centuries(client, service):
    # 12 points, six at each end of the supported years: a regular grid of 5-minute (trained)
    # or microsecond (inferred) steps between them would hold 30 million to 9e15 steps.
    stamps = ([f"1970-01-01T00:00:00.00000{i}Z" for i in range(6)]
              + [f"2261-12-31T23:59:59.99999{i}Z" for i in range(6)])
    response = client.post("/v1/forecast", json={
        "service": service, "metric": "cpu", "horizon": 5,
        "history": {"timestamps": stamps, "values": [1.0] * 12}})
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{service}/cpu: history spans ") and "12 points" in detail, detail
    assert "at most 20,000" in detail


def test_a_whole_number_written_with_a_point_is_an_integer_as_json_schema_says(client):
    whole = client.post("/v1/forecast", json={"service": "web", "metric": "cpu", "horizon": 12.0})
    assert whole.status_code == 200 and len(whole.json()["yhat"]) == 12
    half = client.post("/v1/forecast", json={"service": "web", "metric": "cpu", "horizon": 12.5})
    assert half.status_code == 422 and half.json()["detail"][0].startswith("horizon: ")
