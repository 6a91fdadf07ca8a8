"""What the model contract adds for a forecaster, over every registered forecaster.

A forecaster enrols by registering: the suite is parametrised over the
catalog's forecasters, each fitted with its own cheap ``_test_config()``.
What every model shares (fit, persistence, not fitted, config) is in
``test_model_contract.py``; the detectors have their own part in ``test_contract.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import catalog
from models.forecast import FORECAST_COLUMNS, Forecaster, make_forecaster
from tests.models.test_model_contract import BAD_INPUTS, bad_input

NAMES = catalog.names("forecaster")
HORIZON = 24


def fresh(name: str, **overrides: Any) -> Forecaster:
    cls = catalog.model_class(name, "forecaster")
    return make_forecaster(name, **{**cls._test_config().to_dict(), **overrides})


def test_every_kind_of_forecaster_is_registered():
    assert {"seasonal_naive", "arima", "random_forest", "median_ensemble", "lstm"} <= set(NAMES)


@pytest.fixture(scope="module", params=NAMES)
def fitted(request, fitted_on_history) -> Forecaster:
    """One forecaster per registered name, fitted once for the session; never mutate it."""
    return fitted_on_history(catalog.model_class(request.param, "forecaster"))


@pytest.fixture(scope="module")
def forecast(fitted) -> pd.DataFrame:
    return fitted.forecast(HORIZON)


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


# -- documented bad inputs ----------------------------------------------------------------
@pytest.mark.parametrize(("kind", "error"), BAD_INPUTS)
def test_forecast_refuses_bad_histories(fitted, window, kind, error):
    with pytest.raises(error, match="history"):
        fitted.forecast(HORIZON, bad_input(kind, window))


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


# -- persistence (the rest is in test_model_contract.py) -----------------------------------
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
