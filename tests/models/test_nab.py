"""NAB scoring on small cases worked out by hand.

Timestamps are plain row numbers unless a test says otherwise, so a window
``(10, 19)`` holds rows 10..19 (width 10). Hand values use
``S(y) = 2·sigmoid(-5y) - 1 = tanh(-2.5·y)`` and ``S(-1) = tanh(2.5) = 0.986614``.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import pandas as pd
import pytest

from models.nab import (
    PROFILES,
    FileScore,
    Profile,
    ScoredFile,
    normalised,
    null_score,
    perfect_score,
    probation_length,
    scaled_sigmoid,
    score_file,
    sweep_threshold,
)

STANDARD = PROFILES["standard"]
S_LEFT = math.tanh(2.5)  # S(-1), the largest true-positive weight before normalising


def _alarms(n_rows: int, *rows: int) -> np.ndarray:
    flags = np.zeros(n_rows, dtype=bool)
    flags[list(rows)] = True
    return flags


def _score(n_rows, alarm_rows, windows, profile=STANDARD, probation_rows=0) -> FileScore:
    return score_file(np.arange(n_rows), _alarms(n_rows, *alarm_rows), windows, profile,
                      probation_rows)


def test_scaled_sigmoid_at_its_landmarks():
    # y = -1 (left edge) 0.98661, y = 0 (right edge) 0, y = 1 past a window -0.98661;
    # from y = 3 on a false positive costs the full weight.
    values = scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 2.99, 3.0, 50.0]))
    np.testing.assert_allclose(
        values, [0.986614, 0.848284, 0.0, -0.986614, -0.9999994, -1.0, -1.0], atol=1e-6
    )


def test_the_profiles_are_nabs():
    assert {name: (p.tp_weight, p.fn_weight, p.fp_weight) for name, p in PROFILES.items()} == {
        "standard": (1.0, 1.0, 0.11),
        "reward_low_fp": (1.0, 1.0, 0.22),
        "reward_low_fn": (1.0, 2.0, 0.11),
    }


def test_a_perfect_detector_scores_100():
    # Alarms at the left edge of both windows: y = -1 in each, worth A_TP = 1 each.
    result = _score(20, [5, 14], [(5, 9), (14, 16)])
    assert result.raw == pytest.approx(2.0)
    assert (result.null, result.perfect) == (-2.0, 2.0)
    assert result.normalised == pytest.approx(100.0)
    assert (result.n_windows, result.n_tp, result.n_fn, result.n_fp) == (2, 2, 0, 0)


def test_the_null_detector_scores_0():
    result = _score(20, [], [(5, 9), (14, 16)])
    assert result.raw == pytest.approx(-2.0)
    assert result.normalised == pytest.approx(0.0)
    assert (result.n_tp, result.n_fn) == (0, 2)


def test_an_alarm_at_the_left_edge_earns_a_tp():
    # Window rows 10..19; alarm at row 10: y = -(19 - 10 + 1)/10 = -1, reward S(-1)/S(-1) = 1.
    assert _score(30, [10], [(10, 19)]).raw == pytest.approx(1.0)


def test_an_alarm_at_the_right_edge_earns_almost_nothing():
    # Window rows 100..299 (width 200); alarm at row 299: y = -(299 - 299 + 1)/200 = -0.005,
    # reward tanh(0.0125)/tanh(2.5) = 0.012669.
    result = _score(400, [299], [(100, 299)])
    assert result.raw == pytest.approx(math.tanh(0.0125) / S_LEFT)
    assert result.raw == pytest.approx(0.012669, abs=1e-6)
    assert result.n_tp == 1


def test_an_alarm_halfway_earns_the_sigmoid_weight():
    # Window rows 10..19; alarm at row 15: y = -(19 - 15 + 1)/10 = -0.5,
    # reward tanh(1.25)/tanh(2.5) = 0.848284/0.986614 = 0.859792.
    assert _score(30, [15], [(10, 19)]).raw == pytest.approx(0.859792, abs=1e-6)


def test_only_the_earliest_alarm_in_a_window_counts():
    # Rows 12, 15, 19 alarm in window 10..19; only row 12 counts:
    # y = -(19 - 12 + 1)/10 = -0.8, reward tanh(2)/tanh(2.5) = 0.977107; the others are free.
    several = _score(30, [12, 15, 19], [(10, 19)])
    alone = _score(30, [12], [(10, 19)])
    assert several.raw == pytest.approx(alone.raw)
    assert several.raw == pytest.approx(0.977107, abs=1e-6)
    assert (several.n_tp, several.n_fp) == (1, 0)


def test_an_fp_with_no_window_before_it_costs_the_full_a_fp():
    # Alarm at row 3, window 10..19 missed: -0.11 (FP) - 1 (FN) = -1.11.
    result = _score(30, [3], [(10, 19)])
    assert result.raw == pytest.approx(-1.11)
    assert (result.n_fp, result.n_fn) == (1, 1)


def test_an_fp_far_past_a_window_costs_the_full_a_fp():
    # Window rows 2..3 (width 2) found at its left edge (+1); alarm at row 19:
    # y = (19 - 3)/(2 - 1) = 16 >= 3, cost 0.11. Total 1 - 0.11 = 0.89.
    assert _score(20, [2, 19], [(2, 3)]).raw == pytest.approx(0.89)


def test_an_fp_just_after_a_window_costs_less():
    # Window rows 5..9 (width 5) missed (-1). Alarm at row 10: y = (10 - 9)/(5 - 1) = 0.25,
    # cost 0.11·tanh(0.625) = 0.11·0.554600 = 0.061006. Alarm at row 13: y = 1,
    # cost 0.11·tanh(2.5) = 0.108528.
    just_after = _score(30, [10], [(5, 9)])
    one_width_after = _score(30, [13], [(5, 9)])
    far = _score(30, [29], [(5, 9)])
    assert just_after.raw == pytest.approx(-1 - 0.11 * math.tanh(0.625))
    assert just_after.raw == pytest.approx(-1.061006, abs=1e-6)
    assert one_width_after.raw == pytest.approx(-1.108528, abs=1e-6)
    assert far.raw == pytest.approx(-1.11)
    assert just_after.raw > one_width_after.raw > far.raw


def test_every_fp_is_judged_on_its_own():
    # Three consecutive alarms at rows 0..2 before the window each cost 0.11.
    assert _score(30, [0, 1, 2], [(10, 19)]).raw == pytest.approx(-1 - 3 * 0.11)


def test_fp_distance_is_measured_from_the_closest_preceding_window():
    # Windows 2..3 (width 2) and 10..14 (width 5), both found at the left edge (+2).
    # Alarm at row 16 is 2 rows past the second window: y = 2/4 = 0.5, cost 0.11·tanh(1.25).
    result = _score(30, [2, 10, 16], [(2, 3), (10, 14)])
    assert result.raw == pytest.approx(2 - 0.11 * math.tanh(1.25))


def test_probation_alarms_are_ignored():
    # Probation covers rows 0..4: alarms there neither cost nor earn.
    result = _score(30, [0, 1, 2, 3, 4], [(10, 19)], probation_rows=5)
    assert result.raw == pytest.approx(-1.0)
    assert (result.n_fp, result.n_tp) == (0, 0)


def test_a_window_inside_probation_is_not_scored():
    # Window rows 1..3 lies wholly in the first 5 rows: no FN, and it is left out of
    # null and perfect, so the file has no scored window.
    result = _score(30, [], [(1, 3)], probation_rows=5)
    assert (result.raw, result.n_windows, result.null, result.perfect) == (0.0, 0, 0.0, 0.0)
    assert math.isnan(result.normalised)


def test_a_window_straddling_probation_scores_only_its_later_rows():
    # Window rows 3..12 (width 10), probation rows 0..4: the alarm at row 3 is ignored,
    # the one at row 5 counts with y = -(12 - 5 + 1)/10 = -0.8, reward 0.977107.
    result = _score(30, [3, 5], [(3, 12)], probation_rows=5)
    assert result.raw == pytest.approx(0.977107, abs=1e-6)


@pytest.mark.parametrize(
    ("n_rows", "expected"), [(0, 0), (10, 1), (1243, 186), (4032, 604), (5000, 750), (9000, 750)]
)
def test_probation_length_is_15_percent_at_most_750(n_rows, expected):
    assert probation_length(n_rows) == expected


def test_the_three_profiles_differ_as_expected():
    # Window 10..19 missed; two alarms before it (no preceding window, full A_FP each).
    # standard:      -1 - 2·0.11 = -1.22, null -1, perfect 1: 100·(-0.22)/2 = -11
    # reward_low_fp: -1 - 2·0.22 = -1.44, null -1, perfect 1: 100·(-0.44)/2 = -22
    # reward_low_fn: -2 - 2·0.11 = -2.22, null -2, perfect 1: 100·(-0.22)/3 = -7.33
    scores = {name: _score(30, [2, 3], [(10, 19)], profile) for name, profile in PROFILES.items()}
    assert {n: s.raw for n, s in scores.items()} == pytest.approx(
        {"standard": -1.22, "reward_low_fp": -1.44, "reward_low_fn": -2.22}
    )
    assert {n: s.normalised for n, s in scores.items()} == pytest.approx(
        {"standard": -11.0, "reward_low_fp": -22.0, "reward_low_fn": -22.0 / 3}
    )


def test_normalisation_helpers():
    assert null_score(3, PROFILES["reward_low_fn"]) == -6.0
    assert perfect_score(3, STANDARD) == 3.0
    assert normalised(-6.0, -6.0, 3.0) == 0.0
    assert normalised(3.0, -6.0, 3.0) == 100.0
    assert math.isnan(normalised(-0.5, 0.0, 0.0))


def test_file_scores_add_up_to_a_corpus_score():
    a = _score(20, [5], [(5, 9)])  # raw 1, null -1, perfect 1
    b = _score(20, [], [(5, 9)])  # raw -1
    total = a + b
    assert (total.raw, total.null, total.perfect, total.n_tp, total.n_fn) == (0.0, -2.0, 2.0, 1, 1)
    assert total.normalised == pytest.approx(50.0)


def test_datetime_rows_count_repeats_and_windows_take_every_row_in_their_span():
    # 5-minute steps with 00:10 delivered twice: rows 0..9 hold 00:00, 00:05, 00:10, 00:10,
    # 00:15, ... The window [00:10, 00:25] holds rows 2..6 (width 5); an alarm at row 4
    # (00:15) has y = -(6 - 4 + 1)/5 = -0.6, reward tanh(1.5)/tanh(2.5) = 0.915772.
    stamps = pd.to_datetime(
        ["2026-01-05 00:00", "2026-01-05 00:05", "2026-01-05 00:10", "2026-01-05 00:10",
         "2026-01-05 00:15", "2026-01-05 00:20", "2026-01-05 00:25", "2026-01-05 00:30",
         "2026-01-05 00:35", "2026-01-05 00:40"], utc=True)
    window = (pd.Timestamp("2026-01-05 00:10", tz="UTC"), pd.Timestamp("2026-01-05 00:25", tz="UTC"))
    result = score_file(stamps, _alarms(10, 4), [window], STANDARD, probation_rows=0)
    assert result.raw == pytest.approx(math.tanh(1.5) / S_LEFT)


def test_sweep_finds_the_hand_built_best_threshold():
    # 30 rows, window 20..29 (width 10), background score 0.1; row 5 scores 0.9 (an FP
    # with no window before it), row 20 (left edge) 0.8, row 25 0.95.
    #   threshold inf : no alarm                     -> -1 (null)
    #   threshold 0.95: row 25, y = -0.5             ->  0.859792
    #   threshold 0.9 : + FP at row 5                ->  0.859792 - 0.11 = 0.749792
    #   threshold 0.8 : earliest is now row 20 (+1)  ->  1 - 0.11 = 0.89          <- best
    #   threshold 0.1 : rows 0..19 all FPs           ->  1 - 20·0.11 = -1.2
    # Standard: 0.8 wins, normalised 100·(0.89 + 1)/2 = 94.5. With A_FP = 0.22 the FP costs
    # more than the earlier alarm gains (1 - 0.22 = 0.78 < 0.859792): 0.95 wins, 92.9896.
    scores = np.full(30, 0.1)
    scores[[5, 20, 25]] = [0.9, 0.8, 0.95]
    corpus = [ScoredFile(np.arange(30), scores, [(20, 29)], 0)]
    standard = sweep_threshold(corpus, STANDARD)
    assert standard.threshold == 0.8
    assert standard.raw == pytest.approx(0.89)
    assert standard.normalised == pytest.approx(94.5)
    assert standard.n_candidates == 5
    low_fp = sweep_threshold(corpus, PROFILES["reward_low_fp"])
    assert low_fp.threshold == 0.95
    assert low_fp.normalised == pytest.approx(100 * (0.859792 + 1) / 2, abs=1e-4)


def test_sweep_prefers_never_alarming_when_every_alarm_is_wrong():
    # The only high scores fall before the window; NaN never alarms.
    scores = np.full(30, np.nan)
    scores[:5] = 0.99
    scores[10:20] = 0.0
    result = sweep_threshold([(np.arange(30), scores, [(10, 19)], 0)], STANDARD)
    # threshold 0.99: 5 FPs, -1.55; threshold 0: window found at its left edge, +1 - 0.55 = 0.45.
    assert result.threshold == 0.0
    assert result.raw == pytest.approx(0.45)
    only_wrong = np.where(np.arange(30) < 5, 0.99, 0.0)
    only_wrong[10:20] = np.nan
    result = sweep_threshold([(np.arange(30), only_wrong, [(10, 19)], 0)], STANDARD)
    assert result.threshold == math.inf
    assert result.normalised == 0.0


def test_sweep_agrees_with_score_file_and_beats_every_other_threshold():
    rng = np.random.default_rng(3)
    corpus = []
    for n_rows, windows in [(200, [(60, 79), (120, 139)]), (150, [(100, 129)]), (120, [])]:
        scores = np.round(rng.uniform(0, 1, n_rows), 2)
        for left, _ in windows:
            scores[left + 5] = 0.995
        corpus.append(ScoredFile(np.arange(n_rows), scores, windows, probation_length(n_rows)))
    for profile in PROFILES.values():
        best = sweep_threshold(corpus, profile)

        def total(threshold, profile=profile):
            return functools.reduce(operator.add, (
                score_file(f.timestamps, f.scores >= threshold, f.windows, profile,
                           f.probation_rows)
                for f in corpus
            ))

        at_best = total(best.threshold)
        assert at_best.raw == pytest.approx(best.raw)
        assert at_best.normalised == pytest.approx(best.normalised)
        candidates = np.unique(np.concatenate([f.scores for f in corpus]))
        assert max(total(t).raw for t in candidates) == pytest.approx(best.raw)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alarms": np.zeros(5, dtype=bool)}, ValueError, "alarms has shape"),
        ({"windows": [(2, 6), (5, 8)]}, ValueError, "overlap"),
        ({"windows": [(6, 2)]}, ValueError, "ends"),
        ({"timestamps": np.arange(10)[::-1]}, ValueError, "non-decreasing"),
        ({"probation_rows": -1}, ValueError, "probation_rows"),
        ({"probation_rows": 1.5}, TypeError, "probation_rows"),
        ({"alarms": np.full(10, np.nan)}, ValueError, "NaN"),
    ],
)
def test_bad_input_is_refused(kwargs, error, match):
    args = {"timestamps": np.arange(10), "alarms": np.zeros(10, dtype=bool),
            "windows": [(2, 4)], "profile": STANDARD, "probation_rows": 0} | kwargs
    with pytest.raises(error, match=match):
        score_file(**args)


def test_bad_profiles_and_empty_sweeps_are_refused():
    with pytest.raises(ValueError, match="fp_weight"):
        Profile(name="x", fp_weight=-0.1)
    with pytest.raises(ValueError, match="empty"):
        sweep_threshold([], STANDARD)


# -- onset alarms: what the service pages ---------------------------------------------------
def test_onset_alarms_keep_only_the_first_point_of_each_incident():
    from models.nab import onset_alarms

    stamps = pd.date_range("2026-01-05", periods=12, freq="5min")
    scores = np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, np.nan, 1, 0], dtype=float)
    flags = onset_alarms(stamps, scores, 0.5, pd.Timedelta("10min"))
    # Rows 1-3 are one incident; row 8 starts another (25 min later); row 10 is 10 min after
    # row 8, not more, so it merges with it.
    assert np.flatnonzero(flags).tolist() == [1, 8]
    # With no merge gap every alarmed point pages.
    assert np.flatnonzero(onset_alarms(stamps, scores, 0.5, pd.Timedelta(0))).tolist() == [
        1, 2, 3, 8, 10]
    assert not onset_alarms(stamps, scores, 2.0, pd.Timedelta("10min")).any()


def test_onset_sweep_rewards_a_single_early_alarm_over_a_sustained_run():
    from models.nab import sweep_onset_threshold

    n = 400
    stamps = pd.date_range("2026-01-05", periods=n, freq="5min")
    scores = np.zeros(n)
    scores[200:] = 1.0  # a level shift that keeps scoring high after the window
    window = [(stamps[190], stamps[210])]
    file = ScoredFile(stamps, scores, window, 60)
    onset = sweep_onset_threshold([file], PROFILES["standard"], merge_gap=pd.Timedelta("10min"))
    points = sweep_threshold([file], PROFILES["standard"])
    # One alarm, at row 200, inside the window: nearly the full reward, no false positive.
    assert onset.threshold <= 1.0 and onset.normalised > 50
    # As points, the 189 rows after the window are false positives: never alarming is better.
    assert points.normalised < onset.normalised
