"""Odd but valid windows never crash the service: each gets a 200 and scores in [0, 1] or null.

The bundle holds every default detector (static, dynamic, ARIMA, random forest), so these
windows go through the whole ensemble. Documented behaviour, per case:

* a constant window: scored like any other (a value equal to the usual level is normal);
* an all-null window: every score null, no anomaly;
* a window of 1 or 2 points: scored (the learned detectors fall back to their trained level;
  the forest and ARIMA have no past in the window and abstain or score the level only);
* huge (1e30, the largest magnitude accepted) and negative values: scored, never NaN for a
  present value; far out → 1;
* jittered, irregular timestamps: scored (positions count points; jitter does not matter).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from models.bundle import DEFAULT_DETECTORS, DetectorBundle, fit_series
from models.capacity import MAX_QUANTITY
from serving.app import create_app
from serving.loader import LoadedModel
from serving.settings import Settings
from tests.serving.conftest import daily_series, window_body


@pytest.fixture(scope="module")
def ensemble_client() -> TestClient:
    history = daily_series(288 * 4)
    bundle = DetectorBundle({("web", "cpu"): fit_series(history, DEFAULT_DETECTORS)})
    model = LoadedModel(bundle, "test-detectors", "5", "champion", time.time())
    settings = Settings(tracking_uri="sqlite:///unused.db")
    return TestClient(create_app(settings, model), raise_server_exceptions=False)


def _tail(n: int) -> pd.Series:
    return daily_series(288 * 5, seed=9).iloc[-n:].copy()


def _constant() -> pd.Series:
    window = _tail(120)
    window[:] = 50.0
    return window


def _all_null() -> pd.Series:
    window = _tail(60)
    window[:] = np.nan
    return window


def _huge() -> pd.Series:
    window = _tail(120)
    window.iloc[100] = MAX_QUANTITY
    return window


def _negative() -> pd.Series:
    window = _tail(120)
    window.iloc[100] = -500.0
    return window


def _jittered() -> pd.Series:
    window = _tail(120)
    rng = np.random.default_rng(3)
    jitter = pd.to_timedelta(rng.integers(-60, 60, len(window)), unit="s")
    return pd.Series(window.to_numpy(), index=window.index + jitter)


@pytest.mark.parametrize(
    "make_window",
    [_constant, _all_null, lambda: _tail(1), lambda: _tail(2), _huge, _negative, _jittered],
    ids=["constant", "all-null", "one-point", "two-points", "huge", "negative", "jittered"],
)
def test_odd_windows_are_scored_not_crashed(ensemble_client, make_window):
    window = make_window()
    response = ensemble_client.post("/v1/score", json={"series": [window_body(window)]})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    scores = result["scores"]
    assert len(scores) == len(window)
    for value, score in zip(window.to_numpy(), scores, strict=True):
        if math.isnan(value):
            assert score is None
        else:
            assert score is not None and 0.0 <= score <= 1.0


def test_far_out_values_score_as_anomalies(ensemble_client):
    for window in (_huge(), _negative()):
        body = ensemble_client.post("/v1/score", json={"series": [window_body(window)]}).json()
        flagged = {a["timestamp"] for a in body["results"][0]["anomalies"]}
        assert window.index[100].strftime("%Y-%m-%dT%H:%M:%SZ") in flagged


def test_all_null_window_has_no_anomaly(ensemble_client):
    body = ensemble_client.post("/v1/score", json={"series": [window_body(_all_null())]}).json()
    assert body["results"][0]["anomalies"] == []
    assert body["results"][0]["incidents"] == []
