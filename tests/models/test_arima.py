"""Behaviour of the ARIMA detector: order choice, spikes, fixed parameters, window starts, gaps."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from scipy import signal

import models.arma
from models import ArimaDetector, make_detector
from models.arima import ArimaDetectorConfig

STEP = pd.Timedelta("5min")
POINTS_PER_DAY = 288
SPIKE_AT = 150


def _index(n_points: int, start: str = "2026-01-05T00:00Z") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n_points, freq=STEP)


def arma_series(
    n_points: int,
    *,
    ar: float = 0.0,
    ma: float = 0.0,
    seed: int,
    level: float = 50.0,
    start: str = "2026-01-05T00:00Z",
) -> pd.Series:
    """A seeded ARMA(1, 1) around ``level`` with unit innovations (burn-in discarded)."""
    noise = np.random.default_rng(seed).normal(0.0, 1.0, n_points + 200)
    values = signal.lfilter([1.0, ma], [1.0, -ar], noise)[200:]
    return pd.Series(level + values, index=_index(n_points, start))


def seasonal_ar(n_points: int, *, seed: int) -> pd.Series:
    """A daily sine of amplitude 20 plus AR(1) noise with coefficient 0.8."""
    series = arma_series(n_points, ar=0.8, seed=seed, level=100.0)
    return series + 20.0 * np.sin(2 * np.pi * np.arange(n_points) / POINTS_PER_DAY)


@pytest.fixture(scope="module")
def ar1() -> ArimaDetector:
    # A pure ARIMA (no level window) so that the recursion's own properties can be checked.
    return ArimaDetector(ArimaDetectorConfig(season="none", level_window=0)).fit(
        arma_series(2000, ar=0.7, seed=1)
    )


@pytest.fixture(scope="module")
def ma1() -> ArimaDetector:
    return ArimaDetector(ArimaDetectorConfig(season="none", level_window=0)).fit(
        arma_series(2000, ma=0.6, seed=2)
    )


@pytest.fixture(scope="module")
def seasonal() -> tuple[ArimaDetector, pd.Series]:
    """Fitted on seven days; the series holds an eighth day to score."""
    series = seasonal_ar(8 * POINTS_PER_DAY, seed=3)
    return ArimaDetector().fit(series.iloc[: 7 * POINTS_PER_DAY]), series


def _day_after(seasonal: tuple[ArimaDetector, pd.Series]) -> pd.Series:
    return seasonal[1].iloc[-POINTS_PER_DAY:].copy()


# -- order selection ----------------------------------------------------------------------
def test_an_ar1_series_gets_an_ar1_model(ar1):
    assert ar1.order_ == [1, 0, 0]
    assert ar1.ar_[0] == pytest.approx(0.7, abs=0.05)
    assert ar1.estimation_ == "mle"


def test_an_ma1_series_gets_an_ma1_model(ma1):
    assert ma1.order_ == [0, 0, 1]
    assert ma1.ma_[0] == pytest.approx(0.6, abs=0.05)


def test_a_random_walk_is_differenced():
    walk = pd.Series(np.cumsum(np.random.default_rng(4).normal(size=1000)), index=_index(1000))
    detector = make_detector("arima", season="none", max_p=1, max_q=1).fit(walk)
    assert detector.order_[1] == 1


def test_white_noise_gets_no_coefficients():
    noise = pd.Series(np.random.default_rng(5).normal(size=1000), index=_index(1000))
    detector = make_detector("arima", season="none").fit(noise)
    assert detector.order_ == [0, 0, 0]


def test_aic_never_picks_a_simpler_model_than_bic():
    series = arma_series(1000, ar=0.5, ma=0.3, seed=6)
    n_params = {
        criterion: sum(make_detector("arima", season="none", criterion=criterion)
                       .fit(series).order_)
        for criterion in ("aic", "bic")
    }
    assert n_params["aic"] >= n_params["bic"]


def test_only_the_last_fit_length_points_are_fitted():
    # A regime change far back in the history does not reach the model.
    early = arma_series(3000, ar=-0.6, seed=7)
    late = arma_series(1000, ar=0.7, seed=8, start="2026-01-15T10:00Z")
    history = pd.concat([early, late])
    detector = make_detector("arima", season="none", fit_length=1000).fit(history)
    assert detector.order_ == [1, 0, 0]
    assert detector.ar_[0] == pytest.approx(0.7, abs=0.05)


# -- what it flags ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8.0, -8.0])
def test_a_planted_spike_scores_high_and_normal_points_mostly_low(ar1, size):
    window = arma_series(360, ar=0.7, seed=11, start="2026-02-01T00:00Z")
    window.iloc[SPIKE_AT] += size  # eight innovation sigmas
    scores = ar1.score(window).to_numpy()
    assert scores[SPIKE_AT] >= 0.99
    normal = np.delete(scores, [SPIKE_AT, SPIKE_AT + 1])  # the point after meets the echo
    assert np.mean(normal >= 0.99) < 0.05
    assert np.median(normal) < 0.9


def test_a_seasonal_series_is_deseasonalised_first(seasonal):
    detector, _ = seasonal
    assert detector.season_ == "1D"
    assert detector.order_[0] >= 1  # the AR noise left after the profile
    window = _day_after(seasonal)
    scores = detector.score(window).to_numpy()
    assert np.mean(scores >= 0.99) < 0.05
    window.iloc[SPIKE_AT] += 8.0  # small against the daily swing of 40, large for the noise
    assert detector.score(window).iloc[SPIKE_AT] >= 0.99


def test_the_expected_range_follows_the_season_and_its_bound_scores_the_threshold(seasonal):
    detector, _ = seasonal
    window = _day_after(seasonal)
    low, high = detector.expected_range(window)
    inside = (window.to_numpy() >= low) & (window.to_numpy() <= high)
    assert inside.mean() > 0.95
    true_cycle = np.sin(2 * np.pi * np.arange(len(window)) / POINTS_PER_DAY)
    assert np.corrcoef((low + high) / 2, true_cycle)[0, 1] > 0.95
    # A bound depends on the past only, so a value placed on it scores the default threshold.
    on_bound = window.copy()
    on_bound.iloc[SPIKE_AT] = high[SPIKE_AT]
    assert detector.score(on_bound).iloc[SPIKE_AT] == pytest.approx(0.99, abs=1e-6)


# -- fixed parameters, speed --------------------------------------------------------------
def test_scoring_never_refits_nor_calls_statsmodels(ar1, monkeypatch):
    before = json.dumps(ar1.get_state()[0])
    window = arma_series(360, ar=0.7, seed=12, start="2026-02-01T00:00Z")
    expected = ar1.score(window)

    def refuse(*args, **kwargs):
        raise AssertionError("statsmodels was called while scoring")

    monkeypatch.setattr(models.arma, "ARIMA", refuse)  # where the detector reaches statsmodels
    again = ar1.score(window * 3.0)  # other values, same parameters
    pd.testing.assert_series_equal(ar1.score(window), expected)
    assert len(again) == len(window)
    assert json.dumps(ar1.get_state()[0]) == before


def test_a_360_point_window_scores_in_a_few_milliseconds(ar1):
    window = arma_series(360, ar=0.7, seed=13, start="2026-02-01T00:00Z")
    window.iloc[[20, 21, 200]] = np.nan
    ar1.score(window)
    n_calls = 30
    started = time.perf_counter()
    for _ in range(n_calls):
        ar1.score(window)
    per_call_s = (time.perf_counter() - started) / n_calls
    assert per_call_s < 0.020  # typically well under 1 ms; the bound only catches a refit


# -- window starts and causality ----------------------------------------------------------
def test_the_first_points_of_a_window_are_not_over_scored():
    # AR(1) with 0.9: the first value of a window varies 2.3 times more than a one-step error.
    detector = make_detector("arima", season="none", max_q=0).fit(
        arma_series(3000, ar=0.9, seed=14)
    )
    long = arma_series(40 * 100, ar=0.9, seed=15, start="2026-03-01T00:00Z")
    firsts = [detector.score(long.iloc[i : i + 5]).iloc[0] for i in range(0, len(long), 100)]
    assert np.mean(np.asarray(firsts) >= 0.99) < 0.1
    assert detector.innovation_sd_[0] == pytest.approx(
        np.sqrt(detector.sigma2_ / (1 - detector.ar_[0] ** 2)), rel=1e-9
    )
    np.testing.assert_allclose(detector.innovation_sd_[1:], np.sqrt(detector.sigma2_), rtol=1e-9)


def test_an_ma_start_converges_to_the_innovation_sd(ma1):
    sd = ma1.innovation_sd_
    assert (np.diff(sd) <= 1e-12).all()
    assert sd[0] > sd[-1]
    assert sd[-1] == pytest.approx(np.sqrt(ma1.sigma2_), rel=1e-6)


def test_where_a_window_starts_matters_only_for_its_first_points(ar1):
    series = arma_series(400, ar=0.7, seed=16, start="2026-02-01T00:00Z")
    whole = ar1.score(series)
    later = ar1.score(series.iloc[100:])
    # A pure AR(1) predicts from one past value: from the second point on, the scores agree.
    np.testing.assert_allclose(later.iloc[1:].to_numpy(), whole.iloc[101:].to_numpy(),
                               rtol=1e-12, atol=1e-12)


def test_a_restart_ends_the_fading_memory_of_a_moving_average():
    # MA(1) with theta 0.97: without restarts, the start of a window still moves a score 300
    # points later by about 1e-3; with them, it cannot reach past the last restart.
    history = arma_series(2000, ma=0.97, seed=21)
    detector = make_detector("arima", season="none", level_window=0, max_p=0, max_q=1,
                             restart_every=64).fit(history)
    assert tuple(detector.order_) == (0, 0, 1)
    window = arma_series(500, ma=0.97, seed=22, start="2026-02-01T00:00Z")
    context = detector.context_points()
    whole = detector.score_with_range(window)
    later = detector.score_with_range(window.iloc[100:])
    for a, b in zip(whole, later, strict=True):
        np.testing.assert_array_equal(np.asarray(a)[100 + context:], np.asarray(b)[context:])
    # The same windows differ where the recursion has not restarted since the later start.
    assert not np.array_equal(whole[0].to_numpy()[100:110], later[0].to_numpy()[:10])


@pytest.mark.parametrize("level_window", [0, 60])
def test_scores_are_causal(ma1, level_window):
    detector = ma1
    if level_window:
        detector = make_detector("arima", season="none", level_window=level_window)
        detector.set_state(*ma1.get_state())
        detector.calibrator_ = ma1.calibrator_
    window = arma_series(300, ma=0.6, seed=17, start="2026-02-01T00:00Z")
    window.iloc[[40, 90]] += 20.0  # outliers take the scalar path of the recursion
    window.iloc[120] = np.nan
    full = detector.score(window)
    for k in (1, 2, 41, 50, 121, 299):
        np.testing.assert_allclose(detector.score(window.iloc[:k]).to_numpy(),
                                   full.iloc[:k].to_numpy(), rtol=1e-12, atol=1e-12)
    changed = window.copy()
    changed.iloc[150:] += 100.0
    np.testing.assert_array_equal(detector.score(changed).iloc[:150].to_numpy(),
                                  full.iloc[:150].to_numpy())


# -- gaps and edge cases ------------------------------------------------------------------
def test_a_gap_scores_nan_and_the_recursion_restarts_after_it(ma1):
    window = arma_series(300, ma=0.6, seed=18, start="2026-02-01T00:00Z")
    gapped = window.copy()
    gapped.iloc[[100, 101]] = np.nan
    scores = ma1.score(gapped)
    assert scores.iloc[[100, 101]].isna().all()
    assert scores.drop(scores.index[[100, 101]]).notna().all()
    np.testing.assert_array_equal(scores.iloc[:100].to_numpy(), ma1.score(window.iloc[:100]))
    np.testing.assert_array_equal(scores.iloc[102:].to_numpy(), ma1.score(window.iloc[102:]))


def test_a_timestamp_jump_restarts_the_recursion_like_a_gap(ma1):
    window = arma_series(300, ma=0.6, seed=19, start="2026-02-01T00:00Z")
    jumped = window.drop(window.index[100:110])
    scores = ma1.score(jumped)
    np.testing.assert_array_equal(scores.iloc[100:].to_numpy(), ma1.score(window.iloc[110:]))


def test_a_differenced_model_restarts_after_a_gap_without_crashing():
    walk = np.cumsum(np.random.default_rng(20).normal(size=800))
    detector = make_detector("arima", season="none", max_p=1, max_q=1).fit(
        pd.Series(walk[:600], index=_index(600))
    )
    assert detector.order_[1] == 1
    window = pd.Series(walk[600:], index=_index(200, "2026-01-08T00:00Z"))
    window.iloc[[0, 5, 7, 8, 199]] = np.nan  # runs of one point, too
    scores = detector.score(window)
    assert scores.isna().to_numpy().tolist() == window.isna().to_numpy().tolist()
    assert np.nanmean(scores.to_numpy() >= 0.99) < 0.1


def test_an_all_missing_window_scores_all_nan(ar1):
    window = pd.Series(np.nan, index=_index(50, "2026-02-01T00:00Z"))
    assert ar1.score(window).isna().all()
    low, high = ar1.expected_range(window)
    assert np.isfinite(low).all() and (low < high).all()


def test_a_constant_history_flags_any_change():
    detector = make_detector("arima").fit(pd.Series(7.0, index=_index(500)))
    assert detector.estimation_ == "constant"
    window = pd.Series([7.0, 7.0, 7.001, 7.0, np.nan], index=_index(5, "2026-02-01T00:00Z"))
    np.testing.assert_array_equal(detector.score(window).to_numpy(),
                                  [0.0, 0.0, 1.0, 0.0, np.nan])


def test_huge_values_score_one_and_do_not_break_the_rest(ar1):
    window = arma_series(100, ar=0.7, seed=21, start="2026-02-01T00:00Z")
    window.iloc[30] = 1e300
    window.iloc[60] = -1e308
    scores = ar1.score(window).to_numpy()
    assert scores[30] == 1.0 and scores[60] == 1.0
    assert np.isfinite(scores).all()
    assert np.mean(scores[:30] >= 0.99) < 0.1


# The tail calibrator's Pareto fit squares the absurd training score itself and warns.
@pytest.mark.filterwarnings("ignore:overflow encountered in square:RuntimeWarning")
def test_an_absurd_value_in_the_history_neither_overflows_nor_spoils_the_calibration():
    history = arma_series(600, ar=0.7, seed=22)
    history.iloc[100] = 1e300  # a past incident far beyond anything else
    detector = make_detector("arima", season="none").fit(history)
    assert detector.order_[:2] == [1, 0]
    assert detector.ar_[0] == pytest.approx(0.7, abs=0.1)
    assert detector.raw_threshold() < 5.0  # its echo did not flood the training scores
    window = arma_series(360, ar=0.7, seed=11, start="2026-02-01T00:00Z")
    window.iloc[SPIKE_AT] += 8.0
    assert detector.score(window).iloc[SPIKE_AT] >= 0.99


def test_a_spike_does_not_echo_into_the_next_points(ma1):
    window = arma_series(300, ma=0.6, seed=25, start="2026-02-01T00:00Z")
    spiked = window.copy()
    spiked.iloc[SPIKE_AT] += 30.0
    plain = ArimaDetector(ArimaDetectorConfig(season="none", outlier_sd=0)).fit(
        arma_series(2000, ma=0.6, seed=2)
    )
    robust_after = ma1.score(spiked).iloc[SPIKE_AT + 1 : SPIKE_AT + 6].to_numpy()
    plain_after = plain.score(spiked).iloc[SPIKE_AT + 1 : SPIKE_AT + 6].to_numpy()
    assert ma1.score(spiked).iloc[SPIKE_AT] >= 0.99 and plain.score(spiked).iloc[SPIKE_AT] >= 0.99
    assert (plain_after >= 0.99).sum() >= 3  # 30 sigmas times 0.6 ** k
    assert (robust_after >= 0.99).sum() == 0
    # Before the spike nothing differs.
    np.testing.assert_array_equal(ma1.score(spiked).iloc[:SPIKE_AT].to_numpy(),
                                  ma1.score(window).iloc[:SPIKE_AT].to_numpy())


def test_a_lasting_level_shift_is_forgotten_only_with_a_level_window():
    history = arma_series(1000, ar=0.5, seed=23)
    window = arma_series(400, ar=0.5, seed=24, start="2026-02-01T00:00Z")
    window.iloc[100:] += 15.0
    pure = make_detector("arima", season="none", level_window=0).fit(history)
    adaptive = make_detector("arima", season="none", level_window=60).fit(history)
    assert pure.score(window).iloc[100] >= 0.99 and adaptive.score(window).iloc[100] >= 0.99
    assert np.mean(pure.score(window).iloc[250:] >= 0.99) > 0.9
    assert np.mean(adaptive.score(window).iloc[250:] >= 0.99) < 0.1


# -- config and state ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [
        ("season", "weekly", "accepted"),
        ("slot_s", 0, r"\[1, 86400\]"),
        ("min_improvement", 1.0, r"\[0, 1\)"),
        ("max_p", 6, r"\[0, 5\]"),
        ("max_d", 2, r"\[0, 1\]"),
        ("max_q", -1, r"\[0, 5\]"),
        ("criterion", "hqic", "'aic', 'bic'"),
        ("fit_length", 10, r"\[30, 1000000\]"),
        ("level_window", 1, r"0 or lie in \[2, 100000\]"),
        ("outlier_sd", 1.0, r"0 or lie in \[2, 1000\]"),
        ("restart_every", 4, r"\[8, 100000\]"),
    ],
)
def test_bad_config_names_field_value_and_range(field, value, accepted):
    with pytest.raises(ValueError, match=rf"{field}={value!r}.*{accepted}"):
        ArimaDetectorConfig(**{field: value})


@pytest.mark.parametrize("field", ["max_p", "fit_length", "level_window", "restart_every"])
def test_a_fractional_count_is_a_type_error(field):
    with pytest.raises(TypeError, match=field):
        ArimaDetectorConfig(**{field: 2.5})


def test_saved_state_is_plain_json_and_arrays(ar1, tmp_path):
    ar1.save(tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["order_"] == [1, 0, 0]
    assert state["ar_"] == ar1.ar_ and state["ma_"] == []
    assert {"sigma2_", "season_", "mu_", "scale_", "center_"} <= set(state)
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as arrays:
        assert set(arrays.files) == {"profile_", "innovation_sd_"}


def test_a_busy_monday_after_a_quiet_weekend_is_not_rare():
    """At a 1-minute step the fit span (3,000 points) is the weekend alone: its quiet noise
    must not become what normal looks like, so the calibration learns from the whole week."""
    from models.alarms import AlarmPolicy

    index = pd.date_range("2026-01-05T00:00Z", periods=8 * 1440, freq="1min")  # Mon..Mon
    weekend = index.day_of_week >= 5
    noise = np.random.default_rng(3).normal(0.0, 1.0, len(index)) * np.where(weekend, 0.5, 3.0)
    series = pd.Series(100.0 + noise, index=index)
    monday = index >= pd.Timestamp("2026-01-12T00:00Z")
    detector = make_detector("arima").fit(series[~monday])
    assert weekend[~monday][-detector.config.fit_length:].mean() > 0.95  # the span: a weekend
    scores = detector.score(series).to_numpy()[monday]
    threshold = AlarmPolicy().threshold_at(60.0)
    # By chance about 0.14 of 1,440 points reach the 1-minute threshold; with the weekend's
    # calibration nearly all of them would.
    assert (scores >= threshold).sum() <= 3
    assert (scores >= 0.99).mean() < 0.03
