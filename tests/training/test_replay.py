"""The causal replay of ``aiops detect``, with the nightly refits it imitates."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from models.alarms import AlarmPolicy
from models.bundle import combine, fit_series
from training.replay import PAGE_STEP_POINTS, _segments, page_flags, score_series, training_rows


def shifted_series(days: int = 6, shift_day: float = 2) -> pd.Series:
    """Noise at 10-minute steps whose level doubles from ``shift_day`` days in on."""
    index = pd.date_range("2026-03-02", periods=days * 144, freq="10min", tz="UTC")
    rng = np.random.default_rng(7)
    values = 50 + rng.normal(0, 1.0, len(index))
    values[index >= index[0] + pd.Timedelta(days=shift_day)] += 50
    return pd.Series(values, index=index, name="value")


def test_segments_cut_at_every_period_after_the_first_fit():
    index = pd.date_range("2026-03-02", periods=5 * 144, freq="10min", tz="UTC")
    cuts = _segments(index, 144, pd.Timedelta(days=1))
    assert cuts[0] == (144, 288) and cuts[-1] == (576, 720)  # midnights UTC
    assert all(b == c for (_, b), (c, _) in itertools.pairwise(cuts))
    assert _segments(index, 144, None) == [(144, 720)]


def test_refits_absorb_a_level_shift_that_a_single_fit_keeps_alarming_on():
    series = shifted_series()
    once = score_series(series, ("static_threshold",), train_fraction=0.2)
    nightly = score_series(series, ("static_threshold",), train_fraction=0.2,
                           retrain_every=pd.Timedelta(days=1))
    last_day = series.index >= series.index[-1] - pd.Timedelta(hours=23)
    assert (once[last_day] >= 0.9999).mean() > 0.9  # the old model still finds every point odd
    assert (nightly[last_day] >= 0.9999).mean() < 0.05  # the nightly model learnt the new level
    # The shift itself, before any refit has seen it, is flagged by both.
    onset = series.index.get_loc(series.index[series.index >= series.index[0]
                                              + pd.Timedelta(days=2)][0])
    assert once.iloc[onset] >= 0.9999 and nightly.iloc[onset] >= 0.9999


def test_a_refit_does_not_learn_a_shift_still_being_paged_until_it_has_lasted_a_day():
    series = shifted_series(shift_day=2 + 20 / 24)  # from 20:00 on the third day
    retrain, days = pd.Timedelta(days=1), series.index.normalize()
    learning = AlarmPolicy(learn_incident_after_s=0)  # every refit learns every row
    shipped = score_series(series, ("static_threshold",), 0.2, retrain)
    learnt = score_series(series, ("static_threshold",), 0.2, retrain, policy=learning)
    threshold = AlarmPolicy().threshold_at(600)

    def alarmed(scores, day):
        return (scores[days == series.index[0] + pd.Timedelta(days=day)] >= threshold).mean()

    assert alarmed(shipped, 2) == alarmed(learnt, 2) > 0.1  # the evening of the shift: paged
    # The refit at midnight, four hours in: learnt, the alarm would end while the shift goes on.
    assert alarmed(learnt, 3) < 0.05 and alarmed(shipped, 3) > 0.95
    # The next midnight it has lasted more than a day: learnt as the new normal.
    assert alarmed(shipped, 4) < 0.05 and alarmed(shipped, 5) < 0.05
    flags, _ = page_flags(shipped, AlarmPolicy(), 0.2)
    assert flags.sum() == 1  # one incident, paged once


def test_replay_with_refits_is_causal():
    series = shifted_series()
    retrain = pd.Timedelta(days=1)
    full = score_series(series, ("dynamic_threshold",), 0.2, retrain)
    cut = series.index[0] + pd.Timedelta(days=4, hours=5)
    prefix = score_series(series[series.index < cut], ("dynamic_threshold",), 0.2, retrain)
    # Same first fit (the train fraction is of the shorter series here, so compare from day 2).
    later = prefix.index >= series.index[0] + pd.Timedelta(days=2)
    np.testing.assert_allclose(prefix[later], full[prefix.index[later]])


def test_refits_in_parallel_give_the_same_scores_bit_for_bit():
    series = shifted_series(days=4)
    names = ("static_threshold", "dynamic_threshold", "arima")
    retrain = pd.Timedelta(days=1)
    serial = score_series(series, names, 0.2, retrain)
    parallel = score_series(series, names, 0.2, retrain, jobs=2)
    assert np.array_equal(serial.to_numpy(), parallel.to_numpy(), equal_nan=True)
    with pytest.raises(ValueError, match="jobs=0"):
        score_series(series, names, 0.2, retrain, jobs=0)


def test_each_day_is_scored_from_its_context_as_from_the_series_start():
    index = pd.date_range("2026-03-02", periods=4 * 144, freq="10min", tz="UTC")
    rng = np.random.default_rng(8)
    series = pd.Series(50 + 10 * np.sin(np.arange(len(index)) / 23) + rng.normal(0, 1, len(index)),
                       index=index)
    series.iloc[[300, 301, 450]] = np.nan
    names = ("dynamic_threshold", "arima", "random_forest")
    # Every refit learns every row here, so that the fits below are the replay's.
    learning = AlarmPolicy(learn_incident_after_s=0)
    replayed = score_series(series, names, 0.25, pd.Timedelta(days=1), policy=learning)
    # What the replay scored before each detector declared its context: every day's rows
    # scored in a window from the series' first row.
    expected = np.full(len(series), np.nan)
    for i, (start, end) in enumerate(_segments(series.index, training_rows(len(series), 0.25),
                                               pd.Timedelta(days=1))):
        detectors = fit_series(series.iloc[:start], names)
        lo = 0 if i == 0 else start
        expected[lo:end] = combine({n: d.score(series.iloc[:end]).to_numpy()[lo:]
                                    for n, d in detectors.items()})
    assert np.array_equal(replayed.to_numpy(), expected, equal_nan=True)


def test_a_non_positive_period_is_refused():
    with pytest.raises(ValueError, match="retrain_every"):
        score_series(shifted_series(), ("static_threshold",), 0.2, pd.Timedelta(0))


def test_pages_judge_each_row_at_the_threshold_of_its_trailing_step():
    """A stream that goes from 5-minute to 1-minute steps: 0.9997 is above the 5-minute
    threshold (0.9995) and below the 1-minute one (0.9999); the replay's pages follow the
    step of the rows up to each row, as the service follows each window's."""
    coarse = pd.date_range("2026-01-05", periods=400, freq="5min", tz="UTC")
    fine = pd.date_range(coarse[-1] + pd.Timedelta("1min"), periods=3 * PAGE_STEP_POINTS,
                         freq="1min", tz="UTC")
    scores = pd.Series(0.5, index=coarse.append(fine))
    scores.iloc[[200, 201]] = 0.9997  # two alarmed points: confirmed at 5 minutes
    scores.iloc[[400 + 2 * PAGE_STEP_POINTS, 401 + 2 * PAGE_STEP_POINTS]] = 0.9997
    flags, seen = page_flags(scores, AlarmPolicy(), train_fraction=0.01)
    assert np.flatnonzero(flags).tolist() == [201]
    assert min(seen) == pytest.approx(0.9995) and max(seen) == pytest.approx(0.9999)
    # Scores of early rows do not depend on later rows, nor do their pages.
    early, _ = page_flags(scores.iloc[:300], AlarmPolicy(), train_fraction=0.01 * 3)
    assert early.tolist() == flags[:300].tolist()
    # Rows the first fit saw never page: the service had not scored them.
    assert not page_flags(scores, AlarmPolicy(), train_fraction=0.2)[0].any()
