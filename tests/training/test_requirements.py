"""The pip requirements a logged bundle carries follow the capabilities of the models in it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.bundle import DetectorBundle
from models.ensemble_forecast import MedianEnsembleForecaster
from models.forecast import SeasonalNaiveForecaster, make_forecaster
from models.lstm_forecast import LstmForecaster
from models.thresholds import StaticThresholdDetector
from training.registration import _pip_requirements

KEY = ("checkout", "latency_p99")


def _history() -> pd.Series:
    index = pd.date_range("2026-01-05T00:00Z", periods=3 * 288, freq="5min")
    phase = 2 * np.pi * np.arange(len(index)) / 288
    noise = np.random.default_rng(0).normal(0.0, 1.0, len(index))
    return pd.Series(50.0 + 10.0 * np.sin(phase) + noise, index=index)


def _bundle(forecaster=None) -> DetectorBundle:
    history = _history()
    detectors = {KEY: {"static_threshold": StaticThresholdDetector().fit(history)}}
    forecasters = {KEY: forecaster.fit(history)} if forecaster is not None else {}
    return DetectorBundle(detectors, forecasters=forecasters)


def _names(requirements: list[str]) -> set[str]:
    return {r.split("==")[0] for r in requirements}


def test_a_bundle_without_torch_models_does_not_pin_torch():
    assert "torch" not in _names(_pip_requirements(_bundle(SeasonalNaiveForecaster())))


def test_an_lstm_forecaster_pins_torch():
    # Before, only the LSTM *detector* did: a bundle with an LSTM forecaster failed to load.
    lstm = LstmForecaster(LstmForecaster._test_config())
    assert "torch" in _names(_pip_requirements(_bundle(lstm)))


def test_an_lstm_member_of_an_ensemble_pins_torch():
    history = _history()
    members = [SeasonalNaiveForecaster().fit(history),
               make_forecaster("lstm", **LstmForecaster._test_config().to_dict()).fit(history)]
    bundle = _bundle()
    bundle.forecasters[KEY] = MedianEnsembleForecaster.from_members(members)
    assert "torch" in _names(_pip_requirements(bundle))
