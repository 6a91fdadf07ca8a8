"""The LSTM forecaster: the forecast contract, what it learns, one global network, persistence.

Small configs (a tiny network, a few hundred windows) keep every fit to a second or two;
the fits are module-scoped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.base import ModelFormatError, NotFittedError
from models.forecast import FORECAST_COLUMNS, FORECASTERS, Forecaster, make_forecaster
from models.lstm import NETWORK_FILE
from models.lstm_forecast import LstmForecaster, LstmForecasterConfig, fit_global

#: Half-hour steps: a day is 48 of them.
DAY = 48
TINY = {"context": 24, "train_horizon": 48, "max_horizon": 48, "hidden_size": 16,
        "epochs": 6, "n_windows": 300}


def daily(days: float, *, seed: int, level: float = 100.0, amplitude: float = 40.0,
          noise: float = 2.0) -> pd.Series:
    index = pd.date_range("2026-03-02", periods=int(days * DAY), freq="30min", tz="UTC")
    phase = 2 * np.pi * (index.hour * 60 + index.minute) / 1440
    rng = np.random.default_rng(seed)
    return pd.Series(level + amplitude * np.sin(phase) + rng.normal(0, noise, len(index)),
                     index=index)


def tiny(**overrides) -> LstmForecasterConfig:
    return LstmForecasterConfig(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def series() -> pd.Series:
    return daily(9, seed=1)


@pytest.fixture(scope="module")
def fitted(series) -> LstmForecaster:
    return LstmForecaster(tiny()).fit(series.iloc[:-DAY])


def test_lstm_is_registered_and_made_by_name():
    assert FORECASTERS["lstm"] is LstmForecaster
    model = make_forecaster("lstm", hidden_size=4)
    assert isinstance(model, LstmForecaster) and model.config.hidden_size == 4


def test_forecast_has_the_contract_columns_index_and_ordered_quantiles(fitted, series):
    out = fitted.forecast(DAY)
    assert list(out.columns) == list(FORECAST_COLUMNS)
    assert out.index.equals(series.index[-DAY:])
    assert np.isfinite(out.to_numpy()).all()
    assert (out["q10"] <= out["q50"]).all() and (out["q50"] <= out["q90"]).all()
    np.testing.assert_array_equal(out["yhat"].to_numpy(), out["q50"].to_numpy())
    # From a later origin given as history, without refitting.
    later = fitted.forecast(10, series.iloc[: -DAY + 5])
    assert later.index[0] == series.index[-DAY + 5] and len(later) == 10


def test_learns_the_daily_cycle_far_better_than_a_flat_mean(fitted, series):
    assert fitted.season_ == "1D"
    actual = series.iloc[-DAY:].to_numpy()
    out = fitted.forecast(DAY)
    mae = np.abs(out["yhat"].to_numpy() - actual).mean()
    flat = np.abs(series.iloc[:-DAY].mean() - actual).mean()  # about 25 on a ±40 sine
    assert mae < 0.2 * flat
    inside = ((actual >= out["q10"]) & (actual <= out["q90"])).mean()
    assert 0.5 <= inside <= 1.0


def test_same_seed_same_forecast_and_refit_replaces_everything(fitted, series):
    history = series.iloc[:-DAY]
    twin = LstmForecaster(tiny()).fit(history * 3 + 7).fit(history)
    pd.testing.assert_frame_equal(twin.forecast(DAY), fitted.forecast(DAY))


def test_save_and_load_give_identical_forecasts(fitted, tmp_path):
    path = fitted.save(tmp_path / "lstm")
    assert (path / NETWORK_FILE).is_file()
    assert not list(path.rglob("*.pkl"))
    loaded = Forecaster.load(path)
    assert isinstance(loaded, LstmForecaster) and loaded.config == fitted.config
    pd.testing.assert_frame_equal(loaded.forecast(DAY), fitted.forecast(DAY))
    (path / NETWORK_FILE).unlink()
    with pytest.raises(ModelFormatError, match=r"network\.pt is missing"):
        Forecaster.load(path)


def test_a_network_of_another_size_is_a_format_error(fitted, tmp_path):
    path = fitted.save(tmp_path / "lstm")
    other = LstmForecaster(tiny(hidden_size=4)).fit(daily(6, seed=2))
    torch.save(other.network_.state_dict(), path / NETWORK_FILE)
    with pytest.raises(ModelFormatError, match="hidden_size=16"):
        Forecaster.load(path)


def test_global_fit_shares_one_network_and_forecasts_each_in_its_own_units():
    histories = {
        "cpu": daily(8, seed=3),
        "bytes": daily(8, seed=4) * 1000.0,
        "requests": daily(8, seed=5, level=500.0, amplitude=100.0, noise=5.0),
    }
    models = fit_global(histories, tiny(calibrate=True))
    assert set(models) == set(histories)
    states = [m.network_.state_dict() for m in models.values()]
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[k], states[0][k]) for k in state)
    assert len({id(m.network_) for m in models.values()}) == 3  # copies, not one object
    for name, model in models.items():
        assert model.network_source_ == "global"
        assert (model.interval_factors_ > 0).all() and (model.interval_factors_ != 1).any()
        history = histories[name]
        out = model.forecast(DAY)
        assert out.index[0] == history.index[-1] + pd.Timedelta("30min")
        # Each in its own units: within the series' range, not another's.
        low, high = history.quantile(0.01), history.quantile(0.99)
        spread = high - low
        assert out["yhat"].between(low - 0.2 * spread, high + 0.2 * spread).all()


def test_fit_is_the_single_series_case_of_fit_global(series):
    history = series.iloc[:-DAY]
    alone = LstmForecaster(tiny(epochs=2)).fit(history)
    pooled = fit_global({"only": history}, tiny(epochs=2))["only"]
    pd.testing.assert_frame_equal(alone.forecast(DAY), pooled.forecast(DAY))


def test_gaps_in_the_history_are_handled(series):
    history = series.iloc[:-DAY].copy()
    history.iloc[100:130] = np.nan
    history.iloc[-5:-2] = np.nan
    model = LstmForecaster(tiny(epochs=2)).fit(history.drop(history.index[200:210]))
    out = model.forecast(DAY)
    assert np.isfinite(out.to_numpy()).all()
    # A context that is all gap still forecasts (from the older history it was given).
    gappy = series.iloc[:-DAY].copy()
    gappy.iloc[-30:] = np.nan
    assert np.isfinite(model.forecast(12, gappy).to_numpy()).all()


def test_horizon_beyond_max_horizon_is_refused(fitted):
    with pytest.raises(ValueError, match="max_horizon"):
        LstmForecasterConfig(train_horizon=48, max_horizon=96)
    with pytest.raises(ValueError, match="horizon=49"):
        fitted.forecast(49)


@pytest.mark.parametrize(("field", "value", "error"), [
    ("context", 1, ValueError),
    ("hidden_size", 0, ValueError),
    ("epochs", 0, ValueError),
    ("n_windows", 10, ValueError),
    ("learning_rate", 0.0, ValueError),
    ("validation_fraction", 0.9, ValueError),
    ("seed", -1, ValueError),
    ("batch_size", 2.5, TypeError),
    ("calibrate", "yes", TypeError),
])
def test_bad_config_values_are_refused_naming_the_field(field, value, error):
    with pytest.raises(error, match=field):
        LstmForecasterConfig(**{field: value})


def test_too_short_history_and_bad_inputs_are_refused(series):
    with pytest.raises(ValueError, match="at least 100"):
        LstmForecaster(tiny()).fit(series.iloc[:60])
    with pytest.raises(ValueError, match="needs about"):
        LstmForecaster(tiny(context=96)).fit(series.iloc[:120])
    with pytest.raises(ValueError, match=r"histories\['b'\]"):
        fit_global({"a": series, "b": series.iloc[:120]}, tiny(context=96))
    with pytest.raises(ValueError, match="empty"):
        fit_global({}, tiny())
    with pytest.raises(TypeError, match="mapping"):
        fit_global([series], tiny())
    with pytest.raises(NotFittedError):
        LstmForecaster(tiny()).forecast(3)


def test_importing_models_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, models; from models.forecast import FORECASTERS; "
            "assert 'lstm' in FORECASTERS; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
