"""The multi-metric correlation detector on a small service whose metrics follow load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import ModelFormatError, NotFittedError
from models.correlation import CorrelationDetector, CorrelationDetectorConfig

N = 4 * 288


def service_frame(n: int = N, seed: int = 0, start: str = "2026-01-05") -> pd.DataFrame:
    """Request rate with a daily cycle; CPU follows it; latency grows convexly with CPU."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n, freq="5min", tz="UTC")
    rate = 200 + 150 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 8, n)
    cpu = 10 + 0.15 * rate + rng.normal(0, 1.0, n)
    u = cpu / 100
    latency = 80 * (1 + 0.5 * u / (1 - u)) + rng.normal(0, 1.5, n)
    noise = rng.normal(50, 5, n)  # a metric nothing explains
    return pd.DataFrame({"request_rate": rate, "cpu_utilization": cpu, "latency_p99": latency,
                         "unrelated": noise}, index=index)


@pytest.fixture(scope="module")
def detector() -> CorrelationDetector:
    return CorrelationDetector().fit(service_frame())


def test_models_only_metrics_the_siblings_explain(detector):
    # request_rate is the load (no drivers); "unrelated" is explained by nothing.
    assert set(detector.metrics) == {"cpu_utilization", "latency_p99"}
    assert detector.r2_["latency_p99"] > 0.9
    assert detector.r2_["unrelated"] < 0.5


def test_latency_up_while_cpu_and_load_are_normal_is_found_and_diagnosed(detector):
    window = service_frame(seed=1, start="2026-01-09").iloc[:360].copy()
    window.iloc[200:230, window.columns.get_loc("latency_p99")] *= 2.0
    scores = detector.score(window)
    assert (scores["latency_p99"].iloc[200:230] >= 0.99).all()
    normal = scores.drop(window.index[200:230])
    assert (normal["latency_p99"] >= 0.99).mean() < 0.05
    residual = detector.residuals(window)["latency_p99"][210]
    diagnosis = detector.diagnose("latency_p99", residual,
                                  {"cpu_utilization": 0.4, "request_rate": 0.7})
    assert diagnosis.text == ("latency_p99 high while cpu_utilization and request_rate are "
                              "normal: suspect network or a downstream dependency")
    assert diagnosis.direction == "high"


def test_diagnosis_when_the_siblings_are_abnormal_too(detector):
    text = detector.diagnose("cpu_utilization", -3.0, {"request_rate": 0.999}).text
    assert text.startswith("cpu_utilization low, out of line with request_rate")


def test_scoring_is_causal_and_needs_the_siblings(detector):
    window = service_frame(seed=2).iloc[:100]
    full = detector.score(window)
    head = detector.score(window.iloc[:60])
    pd.testing.assert_frame_equal(full.iloc[:60], head)
    partial = detector.score(window[["latency_p99", "cpu_utilization"]])
    assert partial.empty or "latency_p99" not in partial.columns


def test_gaps_give_nan_not_alarms(detector):
    window = service_frame(seed=3).iloc[:50].copy()
    window.iloc[10, 0] = np.nan  # request_rate missing at one instant
    scores = detector.score(window)
    assert np.isnan(scores["cpu_utilization"].iloc[10])
    assert np.isnan(scores["latency_p99"].iloc[10])


def test_save_load_round_trip(detector, tmp_path):
    detector.save(tmp_path / "c")
    loaded = CorrelationDetector.load(tmp_path / "c")
    window = service_frame(seed=4).iloc[:200]
    pd.testing.assert_frame_equal(detector.score(window), loaded.score(window))
    (tmp_path / "c" / "state.json").write_text("{")
    with pytest.raises(ModelFormatError, match="cannot read a correlation detector"):
        CorrelationDetector.load(tmp_path / "c")


def test_bad_inputs():
    with pytest.raises(NotFittedError):
        CorrelationDetector().score(service_frame().iloc[:10])
    with pytest.raises(ValueError, match="at least 2"):
        CorrelationDetector().fit(service_frame()[["cpu_utilization"]])
    with pytest.raises(TypeError, match="DataFrame"):
        CorrelationDetector().fit(service_frame()["cpu_utilization"])
    with pytest.raises(ValueError, match=r"min_r2=1\.5"):
        CorrelationDetectorConfig(min_r2=1.5)
    too_short = CorrelationDetector().fit(service_frame().iloc[:50])
    assert too_short.metrics == []
