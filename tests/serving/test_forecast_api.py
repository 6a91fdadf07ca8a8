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
