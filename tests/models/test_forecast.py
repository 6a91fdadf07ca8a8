"""Forecasters and their rolling-origin backtest, on small generated series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.arima_forecast import ArimaForecaster
from models.backtest import backtest, choose, mase_scale, origins
from models.base import ModelFormatError, NotFittedError
from models.forecast import (
    FORECAST_COLUMNS,
    Forecaster,
    SeasonalNaiveForecaster,
    make_forecaster,
    regular_grid,
)


def daily(days: float = 6, step: str = "30min", noise: float = 1.0, seed: int = 3) -> pd.Series:
    index = pd.date_range("2026-03-02", periods=int(days * pd.Timedelta("1D") / pd.Timedelta(step)),
                          freq=step, tz="UTC")
    phase = 2 * np.pi * (index.hour * 60 + index.minute) / 1440
    rng = np.random.default_rng(seed)
    return pd.Series(100 + 40 * np.sin(phase) + rng.normal(0, noise, len(index)), index=index)


@pytest.mark.parametrize("name", ["seasonal_naive", "arima", "random_forest"])
def test_forecast_follows_the_daily_cycle_with_ordered_quantiles(name):
    series = daily()
    model = make_forecaster(name).fit(series.iloc[:-48])
    assert model.season_ == "1D"
    out = model.forecast(48)
    assert list(out.columns) == list(FORECAST_COLUMNS)
    assert out.index[0] == series.index[-48] and len(out) == 48
    actual = series.iloc[-48:].to_numpy()
    assert np.abs(out["yhat"].to_numpy() - actual).mean() < 3.0  # the cycle swings ±40
    assert (out["q10"] <= out["q50"]).all() and (out["q50"] <= out["q90"]).all()
    inside = ((actual >= out["q10"]) & (actual <= out["q90"])).mean()
    assert 0.5 <= inside <= 1.0


def test_forecast_starts_after_the_history_it_is_given():
    series = daily()
    model = SeasonalNaiveForecaster().fit(series.iloc[:150])
    out = model.forecast(10, series.iloc[:200])
    assert out.index[0] == series.index[200]
    # One day back from each target: the seasonal naive rule.
    np.testing.assert_allclose(out["yhat"].to_numpy(), series.iloc[152:162].to_numpy())


def test_gaps_and_jitter_are_put_on_the_grid():
    series = daily(days=3)
    jittered = series.copy()
    jittered.index = jittered.index + pd.to_timedelta(np.tile([0, 7, -5], 48)[: len(series)], "s")
    jittered = jittered.drop(jittered.index[10:14])
    grid = regular_grid(jittered, pd.Timedelta("30min"))
    assert len(grid) == len(series) and grid.isna().sum() == 4
    out = ArimaForecaster().fit(jittered).forecast(12)
    assert np.isfinite(out.to_numpy()).all()


def test_save_and_load_give_the_same_forecast(tmp_path):
    model = ArimaForecaster().fit(daily())
    loaded = Forecaster.load(model.save(tmp_path / "arima"))
    pd.testing.assert_frame_equal(loaded.forecast(24), model.forecast(24))
    (tmp_path / "arima" / "config.json").write_text('{"format_version": 1}')
    with pytest.raises(ModelFormatError, match="format_version"):
        Forecaster.load(tmp_path / "arima")


def test_bad_requests_name_what_is_wrong():
    with pytest.raises(NotFittedError):
        SeasonalNaiveForecaster().forecast(3)
    model = SeasonalNaiveForecaster().fit(daily())
    with pytest.raises(ValueError, match="horizon=0"):
        model.forecast(0)
    with pytest.raises(ValueError, match="horizon=5000"):
        model.forecast(5000)
    with pytest.raises(ValueError, match="unknown forecaster 'prophet'"):
        make_forecaster("prophet")
    with pytest.raises(ValueError, match="season='hourly'"):
        make_forecaster("arima", season="hourly")
    with pytest.raises(ValueError, match="arima needs at least 50"):
        ArimaForecaster().fit(daily().iloc[:20])
    short = daily().iloc[:100]
    short[:] = np.nan
    with pytest.raises(ValueError, match="finite values"):
        SeasonalNaiveForecaster().fit(short)


@pytest.mark.parametrize(("name", "config", "expected"), [
    ("seasonal_naive", {}, 10), ("seasonal_naive", {"season": "1D"}, 48 + 5),
    ("seasonal_naive", {"season": "7D"}, 48 + 5), ("arima", {}, 50), ("random_forest", {}, 50),
])
def test_the_declared_minimum_history_fits_and_one_point_less_is_refused(name, config, expected):
    series = daily(days=3)
    model = make_forecaster(name, **config)
    assert model.min_history_points(pd.Timedelta("30min")) == expected
    assert model.fit(series.iloc[:expected]).is_fitted
    with pytest.raises(ValueError, match=rf"^history has {expected - 1} finite values; {name} "
                                         rf"needs at least {expected}$"):
        make_forecaster(name, **config).fit(series.iloc[:expected - 1])


def test_too_little_history_for_a_weekly_season_falls_back_to_daily():
    model = SeasonalNaiveForecaster(SeasonalNaiveForecaster.config_class(season="7D"))
    model.fit(daily(days=4))
    assert model.season_ == "1D" and model.period_steps == 48


def test_backtest_ranks_a_model_that_knows_the_cycle_above_one_that_does_not():
    series = daily(days=8, noise=2.0)
    scores = backtest(series, ["seasonal_naive", "arima"], horizon=48, n_origins=3)
    assert {s.n_origins for s in scores.values()} == {3}
    assert all(0.0 <= s.coverage <= 1.0 for s in scores.values())
    # Profile + ARIMA averages several days where the naive rule copies one noisy day.
    assert scores["arima"].mase < scores["seasonal_naive"].mase
    assert "median_ensemble" in scores  # the median of the two is scored as well
    assert choose(scores) in ("arima", "median_ensemble")


def test_a_chosen_ensemble_is_the_median_of_the_forecasters_compared():
    from models.backtest import select_forecaster

    # A series both forecasters follow about equally well: the median of the two is chosen.
    selection = select_forecaster(daily(days=8, noise=2.0), 48,
                                  ["seasonal_naive", "arima", "median_ensemble"])
    assert set(selection.scores) == {"seasonal_naive", "arima", "median_ensemble"}
    if selection.forecaster.name == "median_ensemble":
        assert [m.name for m in selection.forecaster.members_] == ["seasonal_naive", "arima"]
    else:  # one was clearly better; then it alone is fitted
        assert selection.forecaster.name in ("seasonal_naive", "arima")


def test_choose_prefers_the_ensemble_unless_a_model_is_clearly_better():
    from models.backtest import BacktestScore

    def scores(**mase):
        return {n: BacktestScore(n, m, 0.8, 3, 100) for n, m in mase.items()}

    assert choose(scores(arima=0.95, seasonal_naive=1.2, median_ensemble=1.0)) == "median_ensemble"
    assert choose(scores(arima=0.65, seasonal_naive=1.2, median_ensemble=1.0)) == "arima"
    assert choose(scores(arima=0.75, seasonal_naive=1.2, median_ensemble=1.0)) == "median_ensemble"
    assert choose(scores(arima=0.9, seasonal_naive=0.8)) == "seasonal_naive"
    assert choose(scores(arima=float("nan"))) == "seasonal_naive"


def test_median_ensemble_is_the_median_of_its_members_and_reloads(tmp_path):
    from models.ensemble_forecast import MedianEnsembleForecaster

    series = daily()
    ensemble = MedianEnsembleForecaster().fit(series)
    members = [m.forecast(24) for m in ensemble.members_]
    expected = np.median(np.stack([f["yhat"].to_numpy() for f in members]), axis=0)
    out = ensemble.forecast(24)
    np.testing.assert_allclose(out["yhat"].to_numpy(), expected)
    loaded = Forecaster.load(ensemble.save(tmp_path / "ens"))
    pd.testing.assert_frame_equal(loaded.forecast(24), out)
    with pytest.raises(ValueError, match="at least two"):
        make_forecaster("median_ensemble", members=["arima"])


def test_backtest_refuses_a_series_too_short_for_its_horizon():
    with pytest.raises(ValueError, match="horizon 500"):
        backtest(daily(days=2), horizon=500)


def test_mase_scale_and_origins():
    train = pd.Series([1.0, 2.0, 4.0, 7.0], index=pd.date_range("2026-01-01", periods=4,
                                                                 freq="h", tz="UTC"))
    assert mase_scale(train, 1) == pytest.approx(2.0)  # |1| + |2| + |3| over 3
    assert mase_scale(train * 0, 1) == 1.0  # constant: a scale of 1, not a division by zero
    assert origins(100, 10, 3, 50) == [50, 70, 90]
    assert origins(100, 60, 3, 50) == []


def test_random_forest_forecaster_saves_without_pickle_and_reloads(tmp_path):
    from models.random_forest_forecast import RandomForestForecaster

    model = RandomForestForecaster().fit(daily(days=4))
    path = model.save(tmp_path / "rf")
    assert (path / "forest.skops").is_file()
    loaded = Forecaster.load(path)
    pd.testing.assert_frame_equal(loaded.forecast(30), model.forecast(30))
    (path / "forest.skops").unlink()
    with pytest.raises(ModelFormatError, match=r"forest\.skops is missing"):
        Forecaster.load(path)


def test_score_fitted_scores_models_fitted_elsewhere_as_backtest_does():
    from models.backtest import score_fitted, training_part

    series = daily(days=8, noise=2.0)
    expected = backtest(series, ["seasonal_naive"], horizon=48, n_origins=3)
    naive = SeasonalNaiveForecaster().fit(training_part(series))
    assert score_fitted(series, {"seasonal_naive": naive}, horizon=48, n_origins=3) == expected


@pytest.mark.parametrize("season", ["none", "1D"])
def test_a_history_ending_in_a_gap_is_forecast_from_its_last_observed_value(season):
    index = pd.date_range("2026-01-05", periods=288 * 3, freq="5min", tz="UTC")
    history = pd.Series(10.0 + np.arange(len(index)) % 288 / 100, index=index)
    history.iloc[-6:] = np.nan  # the last half hour not scraped yet
    config = SeasonalNaiveForecaster.config_class(season=season, max_horizon=48)
    fitted = SeasonalNaiveForecaster(config).fit(history)
    for frame in (fitted.forecast(12), fitted.forecast(12, history)):
        assert np.isfinite(frame.to_numpy()).all()
        assert frame.index[0] == index[-1] + pd.Timedelta("5min")
    if season == "none":
        assert (fitted.forecast(3)["yhat"] == history.iloc[-7]).all()
