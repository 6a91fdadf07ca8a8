"""The one catalog of model classes, their capability flags and the shared base's rules."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

import models
from models import catalog
from models.base import Detector, DetectorConfig
from models.contract import Model
from models.forecast import FORECASTERS, Forecaster


def test_every_kind_has_its_names_and_a_name_may_serve_two_kinds():
    assert catalog.names("detector") == models.registered_names()
    assert set(catalog.names("forecaster")) == set(FORECASTERS)
    assert catalog.names("service_detector") == ["correlation"]
    arima_detector = catalog.model_class("arima", "detector")
    arima_forecaster = catalog.model_class("arima", "forecaster")
    assert arima_detector is models.ArimaDetector and arima_forecaster is models.ArimaForecaster


def test_make_builds_an_unfitted_model_with_the_config_overrides():
    model = catalog.make("seasonal_naive", "forecaster", max_horizon=12)
    assert isinstance(model, models.SeasonalNaiveForecaster) and not model.is_fitted
    assert model.config.max_horizon == 12
    assert models.make_forecaster("seasonal_naive").config.max_horizon == 2016


def test_unknown_names_and_kinds_are_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown detector 'prophet'; known: \['arima'"):
        catalog.model_class("prophet", "detector")
    with pytest.raises(ValueError, match="unknown forecaster 'prophet'"):
        models.make_forecaster("prophet")
    with pytest.raises(ValueError, match="kind='regressor'"):
        catalog.names("regressor")  # type: ignore[arg-type]


def test_the_views_are_read_only_and_live():
    with pytest.raises(TypeError):
        FORECASTERS["x"] = Forecaster  # type: ignore[index]
    assert FORECASTERS is not None and "lstm" in FORECASTERS


def test_a_second_class_under_a_taken_name_is_refused():
    class Impostor(Detector):
        name = "static_threshold"
        config_class = DetectorConfig

    with pytest.raises(ValueError, match="'static_threshold' is already registered"):
        catalog.register(Impostor)
    assert catalog.model_class("static_threshold", "detector") is models.StaticThresholdDetector


# -- capabilities -------------------------------------------------------------------------
def _with(flag: str) -> set[tuple[str, str]]:
    return {(cls.kind, cls.name) for cls in catalog.all_classes() if getattr(cls, flag)}


def test_only_the_lstm_modules_need_torch():
    assert _with("requires_torch") == {("detector", "lstm"), ("forecaster", "lstm")}


def test_only_the_correlation_model_is_multivariate():
    assert _with("supports_multivariate") == {("service_detector", "correlation")}


def test_only_the_window_baseline_needs_no_fit():
    assert {(c.kind, c.name) for c in catalog.all_classes() if not c.requires_fit} == {
        ("detector", "window_baseline")}


def test_the_reported_expected_range_comes_from_the_seasonal_detector_or_the_baseline():
    assert _with("provides_expected_range") == {("detector", "dynamic_threshold"),
                                               ("detector", "window_baseline")}


@pytest.mark.parametrize("cls", catalog.all_classes(), ids=lambda c: f"{c.kind}-{c.name}")
def test_every_class_carries_a_test_config_of_its_config_class(cls):
    config = cls._test_config()
    assert type(config) is cls.config_class
    assert type(config).from_dict(config.to_dict()) == config


# -- the base's rules, on a toy model -------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class _ToyConfig(DetectorConfig):
    fail: bool = False


class _Toy(Detector):
    name: ClassVar[str] = "toy"
    config_class = _ToyConfig
    calibrated: ClassVar[bool] = False

    def _fit(self, history: pd.Series) -> None:
        self.level_ = float(history.median())
        self.profile_ = history.to_numpy()[:4].copy()
        self._scratch = 1  # private: not learned state
        if self.config.fail:
            raise ValueError("toy fit failed")

    def _score_z(self, window: pd.Series) -> np.ndarray:
        return np.abs(window.to_numpy() - self.level_)

    def _expected_range(self, window, raw_threshold):
        n = len(window)
        return np.full(n, self.level_ - raw_threshold), np.full(n, self.level_ + raw_threshold)


def test_fitted_means_a_learned_attribute_and_the_default_state_is_derived_from_them(history):
    toy = _Toy()
    assert not toy.is_fitted
    toy.fit(history)
    params, arrays = toy.get_state()
    assert params == {"level_": toy.level_} and list(arrays) == ["profile_"]


def test_a_fit_that_raises_leaves_an_unfitted_model_unfitted(history):
    toy = _Toy(_ToyConfig(fail=True))
    with pytest.raises(ValueError, match="toy fit failed"):
        toy.fit(history)
    assert not toy.is_fitted
    assert not hasattr(toy, "level_")


def test_save_and_load_round_trip_through_the_default_state(history, tmp_path):
    toy = _Toy().fit(history)
    loaded = _Toy.load(toy.save(tmp_path))
    assert loaded.level_ == toy.level_
    np.testing.assert_array_equal(loaded.profile_, toy.profile_)


def test_state_that_is_not_plain_must_be_saved_apart(history, tmp_path):
    toy = _Toy().fit(history)
    toy.index_ = history.index  # neither JSON nor an array
    with pytest.raises(TypeError, match=r"_Toy\.index_ is a DatetimeIndex.*saved_apart"):
        toy.save(tmp_path)


def test_every_model_kind_derives_from_the_one_base():
    assert all(issubclass(cls, Model) for cls in catalog.all_classes())
