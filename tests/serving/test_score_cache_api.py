"""``POST /v1/score`` through the replica's score cache: the same answer, less scoring."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from models import registered_names
from models.score_cache import ScoreCache
from serving.app import create_app
from serving.loader import ModelHolder
from tests.serving.conftest import daily_series, window_body


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not on /metrics"
    return float(match.group(1))


def test_a_sliding_window_gets_the_answer_of_a_cold_scoring(settings, loaded_model):
    # Both detectors of the fixture kept (by default only the costly ones are).
    holder = ModelHolder(loaded_model, ScoreCache(settings.score_cache_bytes,
                                                  detectors=registered_names(), call_cost_points=0))
    cached = TestClient(create_app(settings, holder=holder))
    cold = TestClient(create_app(settings.model_copy(update={"score_cache_bytes": 0}),
                                 loaded_model))
    stream = daily_series(400, start="2026-01-11", seed=7)
    stream.iloc[200] += 40.0  # an anomaly inside the overlap, scored from the cache
    stream.iloc[370] = float("nan")  # a gap among the new points
    for start in (0, 6, 12, 30):
        body = {"series": [window_body(stream.iloc[start:start + 360])]}
        answers = [c.post("/v1/score", json=body) for c in (cached, cold)]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].json() == answers[1].json()
    metrics = cached.get("/metrics").text
    reused = _metric(metrics, 'aiops_score_cache_points_total{outcome="reused"}')
    scored = _metric(metrics, 'aiops_score_cache_points_total{outcome="scored"}')
    # Two detectors, four windows of 360: the first is scored whole, the others mostly reused.
    assert reused + scored == 2 * 4 * 360
    assert reused > 0.5 * 2 * 3 * 360
    assert _metric(metrics, "aiops_score_cache_entries") == 2
    assert 0 < _metric(metrics, "aiops_score_cache_bytes") <= _metric(
        metrics, "aiops_score_cache_max_bytes")
    off = cold.get("/metrics").text
    assert _metric(off, 'aiops_score_cache_points_total{outcome="reused"}') == 0
