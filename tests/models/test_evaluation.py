"""Event-level scoring on hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluation import EventScores, event_scores, runs


def _mask(text: str) -> np.ndarray:
    """``"..##.#"`` → a boolean mask, ``#`` marking True."""
    return np.array([c == "#" for c in text])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("....", []),
        ("####", [(0, 4)]),
        ("#..##.#", [(0, 1), (3, 5), (6, 7)]),
        (".##.", [(1, 3)]),
    ],
)
def test_runs(text, expected):
    assert runs(_mask(text)) == expected


def test_runs_accepts_integers():
    assert runs(np.array([0, 2, 1, 0, 1])) == [(1, 3), (4, 5)]


def test_a_long_event_is_found_once_and_a_long_alarm_counted_once():
    labels = _mask("..##########....")
    alarms = _mask("....######......")
    scores = event_scores(labels, alarms)
    assert scores == EventScores(n_events=1, n_found=1, n_alarm_runs=1, n_correct_alarm_runs=1)
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)


def test_hand_worked_precision_recall_f1():
    # events:  A=[1,3)  B=[6,9)  C=[12,13)
    # alarms:  [2,4) touches A; [5,6) touches nothing; [8,11) touches B;
    #          [14,15) touches nothing; nothing inside C.
    labels = _mask(".##...###...#...")
    alarms = _mask("..##.#..###...#.")
    scores = event_scores(labels, alarms)
    assert scores == EventScores(n_events=3, n_found=2, n_alarm_runs=4, n_correct_alarm_runs=2)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.precision == pytest.approx(2 / 4)
    assert scores.f1 == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))  # 4/7


def test_one_alarm_run_spanning_two_events_finds_both_and_counts_once():
    labels = _mask(".##.##.")
    alarms = _mask(".#####.")
    scores = event_scores(labels, alarms)
    assert (scores.n_events, scores.n_found) == (2, 2)
    assert (scores.n_alarm_runs, scores.n_correct_alarm_runs) == (1, 1)


def test_alarms_just_outside_an_event_are_wrong():
    # No point adjustment and no tolerance window: adjacent is not inside.
    scores = event_scores(_mask("...##..."), _mask("..#..#.."))
    assert scores.n_found == 0
    assert scores.n_correct_alarm_runs == 0
    assert scores.precision == 0.0 and scores.recall == 0.0 and scores.f1 == 0.0


def test_no_events_and_no_alarms_is_undefined():
    scores = event_scores(_mask("...."), _mask("...."))
    assert math.isnan(scores.precision) and math.isnan(scores.recall) and math.isnan(scores.f1)


def test_alarms_without_events_score_zero_f1():
    scores = event_scores(_mask("...."), _mask(".#.."))
    assert scores.precision == 0.0
    assert math.isnan(scores.recall)
    assert scores.f1 == 0.0


def test_events_without_alarms_score_zero_f1():
    scores = event_scores(_mask(".##."), _mask("...."))
    assert scores.recall == 0.0
    assert math.isnan(scores.precision)
    assert scores.f1 == 0.0


def test_scores_add_up_across_series():
    a = event_scores(_mask("##.."), _mask("#..."))
    b = event_scores(_mask("..##"), _mask("#..."))
    total = a + b
    assert total == EventScores(n_events=2, n_found=1, n_alarm_runs=2, n_correct_alarm_runs=1)
    assert total.recall == 0.5 and total.precision == 0.5


@pytest.mark.parametrize(
    ("labels", "alarms"), [(np.zeros(5), np.zeros(4)), (np.zeros((2, 3)), np.zeros(6))]
)
def test_shape_mismatch_is_a_value_error(labels, alarms):
    with pytest.raises(ValueError, match="shape"):
        event_scores(labels, alarms)
