"""One contract suite for every registered forecaster, as ``test_contract.py`` is for detectors.

A forecaster enrols by registering: the suite is parametrised over the
catalog's forecasters, each fitted with its own cheap ``_test_config()``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import ModelFormatError, NotFittedError, catalog
from models.forecast import FORECAST_COLUMNS, Forecaster, make_forecaster
from tests.models.test_contract import BAD_INPUTS, _bad_input, _tamper

NAMES = catalog.names("forecaster")
HORIZON = 24


def fresh(name: str, **overrides: Any) -> Forecaster:
    cls = catalog.model_class(name, "forecaster")
    return make_forecaster(name, **{**cls._test_config().to_dict(), **overrides})


def assert_same_state(a: Forecaster, b: Forecaster) -> None:
    params, arrays = a._state_for_save()
    expected_params, expected_arrays = b._state_for_save()
    assert params == expected_params
    assert arrays.keys() == expected_arrays.keys()
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], expected_arrays[key])


def test_every_kind_of_forecaster_is_registered():
    assert {"seasonal_naive", "arima", "random_forest", "median_ensemble", "lstm"} <= set(NAMES)


@pytest.fixture(scope="module", params=NAMES)
def fitted(request, history) -> Forecaster:
    """One forecaster per registered name, fitted once for the whole module; never mutate it."""
    return fresh(request.param).fit(history)


@pytest.fixture(scope="module")
def forecast(fitted) -> pd.DataFrame:
    return fitted.forecast(HORIZON)


# -- fit ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_marks_fitted(name, history):
    model = fresh(name)
    assert not model.is_fitted
    assert model.fit(history) is model
    assert model.is_fitted


def test_refit_equals_fresh_fit(history, fitted, forecast):
    other = pd.Series(
        np.random.default_rng(3).normal(500.0, 40.0, len(history)), index=history.index
    )
    refitted = fresh(fitted.name).fit(other).fit(history)
    pd.testing.assert_frame_equal(refitted.forecast(HORIZON), forecast)
    assert_same_state(refitted, fitted)


@pytest.mark.parametrize("name", NAMES)
def test_fit_leaves_its_input_alone(name, history):
    copy = history.copy()
    fresh(name).fit(copy)
    pd.testing.assert_series_equal(copy, history)


# -- forecast -----------------------------------------------------------------------------
def test_forecast_has_the_columns_the_steps_after_the_history_and_ordered_quantiles(
        fitted, forecast, history):
    assert list(forecast.columns) == list(FORECAST_COLUMNS)
    step = history.index[1] - history.index[0]
    expected = pd.date_range(history.index[-1] + step, periods=HORIZON, freq=step)
    assert forecast.index.equals(expected)
    assert np.isfinite(forecast.to_numpy()).all()
    assert (forecast["q10"] <= forecast["q50"]).all() and (forecast["q50"] <= forecast["q90"]).all()


def test_forecast_starts_after_the_history_it_is_given(fitted, window):
    out = fitted.forecast(HORIZON, window.iloc[:200])
    assert out.index[0] == window.index[200]
    assert len(out) == HORIZON


def test_forecast_leaves_its_input_alone(fitted, window):
    copy = window.copy()
    fitted.forecast(HORIZON, copy)
    pd.testing.assert_series_equal(copy, window)


@pytest.mark.parametrize("horizon", [0, -1])
def test_a_horizon_below_one_is_refused(fitted, horizon):
    with pytest.raises(ValueError, match="horizon"):
        fitted.forecast(horizon)


def test_a_horizon_beyond_max_horizon_is_refused(fitted):
    with pytest.raises(ValueError, match="horizon"):
        fitted.forecast(fitted.config.max_horizon + 1)


def test_a_non_integer_horizon_is_a_type_error(fitted):
    with pytest.raises(TypeError, match="horizon"):
        fitted.forecast(2.5)  # type: ignore[arg-type]


# -- determinism and persistence ----------------------------------------------------------
def test_same_config_same_output(fitted, history, forecast):
    twin = type(fitted)(type(fitted.config).from_dict(fitted.config.to_dict())).fit(history)
    assert twin.config == fitted.config
    pd.testing.assert_frame_equal(twin.forecast(HORIZON), forecast)


def test_config_is_json_friendly(fitted):
    as_dict = fitted.config.to_dict()
    assert type(fitted.config).from_dict(json.loads(json.dumps(as_dict))) == fitted.config


@pytest.mark.parametrize("loader", ["Forecaster", "own class"])
def test_save_load_gives_identical_forecasts(fitted, forecast, window, tmp_path, loader):
    fitted.save(tmp_path / "model")
    cls = Forecaster if loader == "Forecaster" else type(fitted)
    loaded = cls.load(tmp_path / "model")
    assert type(loaded) is type(fitted)
    assert loaded.config == fitted.config
    assert loaded.is_fitted
    pd.testing.assert_frame_equal(loaded.forecast(HORIZON), forecast)
    pd.testing.assert_frame_equal(loaded.forecast(HORIZON, window),
                                  fitted.forecast(HORIZON, window))
    assert_same_state(loaded, fitted)


def test_saved_files_are_plain_formats(fitted, tmp_path):
    fitted.save(tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    assert header["name"] == fitted.name
    assert header["class"] == type(fitted).__name__
    assert isinstance(header["format_version"], int)
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))


def test_loading_into_another_class_is_refused(fitted, tmp_path):
    fitted.save(tmp_path)
    for name in NAMES:
        cls = catalog.model_class(name, "forecaster")
        if issubclass(type(fitted), cls):
            continue
        with pytest.raises(ModelFormatError, match=type(fitted).__name__):
            cls.load(tmp_path)


def test_a_saved_detector_is_not_a_forecaster(history, tmp_path):
    from models import make_detector

    make_detector("static_threshold").fit(history).save(tmp_path)
    with pytest.raises(ModelFormatError, match="static_threshold"):
        Forecaster.load(tmp_path)


@pytest.mark.parametrize("version", [999, "1", None])
def test_tampered_format_version_is_refused(fitted, tmp_path, version):
    fitted.save(tmp_path)
    _tamper(tmp_path, format_version=version)
    with pytest.raises(ModelFormatError, match="format_version"):
        Forecaster.load(tmp_path)
    with pytest.raises(ModelFormatError, match="format_version"):
        type(fitted).load(tmp_path)


def test_unknown_forecaster_name_is_a_format_error(fitted, tmp_path):
    fitted.save(tmp_path)
    _tamper(tmp_path, name="no_such_forecaster", **{"class": "NoSuchForecaster"})
    with pytest.raises(ModelFormatError, match="no_such_forecaster"):
        Forecaster.load(tmp_path)


@pytest.mark.parametrize("broken", ["missing directory", "no state", "no arrays", "bad json"])
def test_unreadable_saved_forecaster_is_a_format_error(fitted, tmp_path, broken):
    directory = tmp_path / "model"
    if broken != "missing directory":
        fitted.save(directory)
    if broken == "no state":
        (directory / "state.json").unlink()
    elif broken == "no arrays":
        (directory / "arrays.npz").unlink()
    elif broken == "bad json":
        (directory / "config.json").write_text("{ truncated")
    with pytest.raises(ModelFormatError, match=re.escape(str(directory))):
        Forecaster.load(directory)


# -- not fitted ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_unfitted_forecaster_refuses_to_forecast_or_save(name, window, tmp_path):
    model = fresh(name)
    with pytest.raises(NotFittedError, match="fit"):
        model.forecast(HORIZON)
    with pytest.raises(NotFittedError):
        model.forecast(HORIZON, window)
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


# -- documented bad inputs ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("kind", "error"), BAD_INPUTS)
def test_fit_refuses_bad_histories(name, history, kind, error):
    model = fresh(name)
    with pytest.raises(error, match="history"):
        model.fit(_bad_input(kind, history))
    assert not model.is_fitted


@pytest.mark.parametrize(("kind", "error"), BAD_INPUTS)
def test_forecast_refuses_bad_histories(fitted, window, kind, error):
    with pytest.raises(error, match="history"):
        fitted.forecast(HORIZON, _bad_input(kind, window))


def test_an_all_missing_history_is_refused(fitted, window):
    with pytest.raises(ValueError, match="history"):
        fitted.forecast(HORIZON, window * np.nan)


@pytest.mark.parametrize("name", NAMES)
def test_too_short_history_is_refused_and_the_declared_minimum_fits(name, history):
    model = fresh(name)
    n = model.min_history_points(pd.Timedelta("5min"))
    with pytest.raises(ValueError, match=rf"has {n - 1} finite values; {name} needs at least {n}$"):
        model.fit(history.iloc[: n - 1])
    assert not model.is_fitted


# -- config -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_field_is_named(name):
    with pytest.raises(ValueError, match="n_bogus_field"):
        make_forecaster(name, n_bogus_field=3)


@pytest.mark.parametrize("name", NAMES)
def test_config_fields_are_keyword_only_and_frozen(name):
    config = catalog.model_class(name, "forecaster").config_class()
    fields = dataclasses.fields(config)
    assert all(f.kw_only for f in fields)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, fields[0].name, None)


def test_wrong_config_class_is_a_type_error():
    naive = catalog.model_class("seasonal_naive", "forecaster")
    arima = catalog.model_class("arima", "forecaster")
    with pytest.raises(TypeError, match=arima.config_class.__name__):
        arima(naive.config_class())


def test_the_saved_layout_is_the_one_forecasters_always_had(history, tmp_path):
    # Keys without the trailing "_", the step, season and origin beside them: bundles saved
    # before the shared base must keep loading.
    path = fresh("seasonal_naive").fit(history).save(tmp_path)
    state = json.loads((path / "state.json").read_text())
    assert set(state) == {"step_ns", "season", "last"}
    with np.load(path / "arrays.npz") as arrays:
        assert set(arrays.files) == {"context", "error_quantiles"}
    assert sorted(p.name for p in Path(path).iterdir()) == ["arrays.npz", "config.json",
                                                            "state.json"]
