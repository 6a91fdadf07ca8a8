"""The registered pyfunc flags ``is_anomaly`` where the service pages, not at the range's score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import METRIC, SERVICE, TIMESTAMP, VALUE
from models.alarms import AlarmPolicy
from models.bundle import DetectorBundle
from models.thresholds import DynamicThresholdDetector


def test_is_anomaly_is_the_alarm_policys_default_threshold():
    from training.pyfunc_model import DetectorBundleModel

    index = pd.date_range("2026-01-05T00:00Z", periods=4 * 288, freq="5min")
    values = 50.0 + np.random.default_rng(1).normal(0.0, 1.0, len(index))
    history = pd.Series(values[:-288], index=index[:-288])
    model = DetectorBundleModel()
    model.bundle = DetectorBundle(
        {("checkout", "latency_p99"): {"dynamic_threshold": DynamicThresholdDetector().fit(history)}})
    window = values[-288:].copy()
    window[[50, 150]] = [54.0, 90.0]  # a mild deviation and a page
    frame = pd.DataFrame({TIMESTAMP: index[-288:], SERVICE: "checkout", METRIC: "latency_p99",
                          VALUE: window})
    scored = model.predict(None, frame)
    threshold = AlarmPolicy().threshold_at(300.0)  # the policy's, at this 5-minute step
    assert threshold == 0.9995
    np.testing.assert_array_equal(scored["is_anomaly"].to_numpy(),
                                  scored["score"].to_numpy() >= threshold)
    assert scored["is_anomaly"].iloc[150]
    # Scores between the expected range's 0.99 and the paging threshold are not anomalies.
    between = scored["score"].between(0.99, threshold, inclusive="left")
    assert between.iloc[50] and between.sum() >= 1
    assert not scored.loc[between, "is_anomaly"].any()
