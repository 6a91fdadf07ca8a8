"""A window on a regular grid (``start``, ``step_s``, ``values``): the answer of its timestamps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import window_body


def grid_body(series: pd.Series, service: str = "web", metric: str = "cpu") -> dict:
    body = window_body(series, service, metric)
    step = series.index[1] - series.index[0]
    del body["timestamps"]
    return {**body, "start": series.index[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "step_s": step.total_seconds()}


def test_a_grid_window_scores_as_its_timestamps_do(client, live_window):
    window = live_window.copy()
    window.iloc[[5, 6, 40]] = np.nan  # gaps are nulls on the grid too
    explicit = client.post("/v1/score", json={"series": [window_body(window)]})
    grid = client.post("/v1/score", json={"series": [grid_body(window)]})
    assert explicit.status_code == grid.status_code == 200
    assert grid.json() == explicit.json()
    assert grid.json()["results"][0]["anomalies"]  # the planted spike, found on the grid too


def test_grid_and_explicit_windows_mix_in_one_request(client, live_window):
    series = [grid_body(live_window, metric="cpu"), window_body(live_window, metric="mem")]
    body = client.post("/v1/score", json={"series": series}).json()
    assert [r["metric"] for r in body["results"]] == ["cpu", "mem"]
    assert body["results"][0]["scores"][:-1] != [None] * (len(live_window) - 1)


def test_a_forecast_history_may_be_a_grid(client, live_window):
    grid = grid_body(live_window)
    history = {k: grid[k] for k in ("start", "step_s", "values")}
    explicit = {k: v for k, v in window_body(live_window).items() if k in ("timestamps", "values")}
    answers = [client.post("/v1/forecast", json={"service": "nobody", "metric": "cpu",
                                                 "horizon": 12, "history": h})
               for h in (history, explicit)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda b: b.pop("step_s"), "series.0", "step_s missing"),
    (lambda b: b.pop("start"), "series.0", "start missing"),
    (lambda b: b.update(timestamps=["2026-01-05T00:00:00Z"]), "series.0", "not both"),
    (lambda b: b.update(step_s=0), "series.0.step_s", "greater than 0"),
    (lambda b: b.update(step_s=-10), "series.0.step_s", "greater than 0"),
    (lambda b: b.update(step_s=1e-9), "series.0.step_s", "whole number of microseconds"),
    (lambda b: b.update(step_s="10"), "series.0.step_s", "valid number"),
    (lambda b: b.update(start="2026-01-05T00:00:00"), "series.0.start", "no timezone"),
    (lambda b: b.update(start="2261-12-31T23:00:00Z"), "series.0", "after the supported years"),
    (lambda b: b.update(values=[]), "series.0.values", "at least 1 item"),
])
def test_a_bad_grid_gets_a_422_naming_the_field(client, live_window, change, field, words):
    body = grid_body(live_window)
    change(body)
    response = client.post("/v1/score", json={"series": [body]})
    assert response.status_code == 422
    detail = " ".join(response.json()["detail"])
    assert field in detail and words in detail, detail
