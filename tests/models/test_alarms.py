"""Alarm post-processing: grouping into incidents, suppression of repeats, severity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.alarms import AlarmPolicy, find_incidents, unlearnt_rows

INDEX = pd.date_range("2026-01-05", periods=120, freq="1min", tz="UTC")
#: Most cases below are written at threshold 0.99 with every alarm paging; the defaults
#: (0.9999, two points to confirm) are tested on their own.
POLICY = AlarmPolicy(threshold=0.99, min_points=1)


def scores_with(*spans: tuple[int, int, float]) -> np.ndarray:
    scores = np.full(len(INDEX), 0.2)
    for start, stop, value in spans:
        scores[start:stop] = value
    return scores


def test_no_alarm_no_incident():
    assert find_incidents(INDEX, scores_with(), "cpu_utilization", POLICY) == []


def test_flapping_alarms_within_the_merge_gap_are_one_incident():
    # Alarms at minutes 10-11, 14 and 18: gaps of 3 and 4 minutes, under the one-hour default.
    scores = scores_with((10, 12, 0.995), (14, 15, 0.9995), (18, 19, 0.993))
    (incident,) = find_incidents(INDEX, scores, "cpu_utilization", POLICY)
    assert incident.start == INDEX[10] and incident.end == INDEX[18]
    assert incident.n_points == 4
    assert incident.peak_at == INDEX[14] and incident.peak_score == pytest.approx(0.9995)


def test_alarms_further_apart_than_the_gap_are_separate_incidents():
    scores = scores_with((10, 12, 0.995), (40, 41, 0.995))
    ten_minutes = AlarmPolicy(threshold=0.99, min_points=1, merge_gap_s=600)
    assert len(find_incidents(INDEX, scores, "cpu_utilization", ten_minutes)) == 2
    merged = find_incidents(INDEX, scores, "cpu_utilization", AlarmPolicy(threshold=0.99, min_points=1, merge_gap_s=3600))
    assert len(merged) == 1


def test_nan_scores_never_alarm_and_min_points_drops_blips():
    scores = scores_with((10, 11, 0.999))
    scores[50:60] = np.nan
    assert len(find_incidents(INDEX, scores, "m", POLICY)) == 1
    assert find_incidents(INDEX, scores, "m", AlarmPolicy(threshold=0.99, min_points=2)) == []


@pytest.mark.parametrize(
    ("metric", "peak", "minutes", "expected"),
    [
        ("request_rate", 0.99999, 20, "P0"),  # traffic gone for a quarter hour: unavailable
        # points = rarity (0-2) + duration (0-2) + criticality weight (-1..2)
        ("request_rate", 0.995, 5, "P3"),  # 0 + 0 + 2: critical metric, brief, barely rare
        ("request_rate", 0.999, 5, "P2"),  # 1 + 0 + 2
        ("latency_p99", 0.99999, 20, "P1"),  # 2 + 1 + 1
        ("latency_p99", 0.9995, 20, "P2"),  # 1 + 1 + 1
        ("cpu_utilization", 0.995, 1, "P3"),  # a brief CPU blip
        ("cpu_utilization", 0.99999, 90, "P1"),
        ("some_new_metric", 0.995, 1, "P3"),
    ],
)
def test_severity_table(metric, peak, minutes, expected):
    assert POLICY.severity(peak, minutes * 60.0, metric) == expected


def test_default_threshold_pages_only_one_point_in_ten_thousand_and_rarity_scales_with_it():
    policy = AlarmPolicy().at_step(60.0)  # INDEX is at a 1-minute step
    assert policy.threshold == 0.9999
    assert find_incidents(INDEX, scores_with((10, 12, 0.9995)), "m") == []
    assert len(find_incidents(INDEX, scores_with((10, 12, 0.99995)), "m")) == 1
    # One alarmed point is not confirmed, unless it is a thousand times rarer than 0.9999.
    assert find_incidents(INDEX, scores_with((10, 11, 0.99995)), "m") == []
    assert len(find_incidents(INDEX, scores_with((10, 11, 0.99999995)), "m")) == 1
    # Rarity counts tenfold steps beyond the threshold, whatever the threshold.
    assert policy.severity(0.99995, 60, "latency_p99") == "P3"  # 0 + 0 + 1
    assert policy.severity(0.99999, 60, "latency_p99") == "P3"  # 1 + 0 + 1
    assert policy.severity(0.999999, 60, "latency_p99") == "P2"  # 2 + 0 + 1


def test_criticality_is_configurable_per_metric():
    policy = AlarmPolicy.from_dict({"threshold": 0.99, "criticality": {"cpu_utilization": 1}})
    assert policy.severity(0.99999, 1200, "cpu_utilization") == "P0"
    assert policy.criticality_of("request_rate") == 1  # defaults kept for the others


def test_incident_severity_uses_its_duration():
    long = scores_with((10, 40, 0.99995))
    (incident,) = find_incidents(INDEX, long, "request_rate", POLICY)
    assert incident.duration_s == 29 * 60
    assert incident.severity == "P0"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"threshold": 1.0}, "threshold"),
        ({"resolve_after_points": 0}, "resolve_after_points"),
        ({"merge_gap_s": -1}, "merge_gap_s"),
        ({"min_points": 0}, "min_points"),
        ({"learn_incident_after_s": -1}, "learn_incident_after_s"),
        ({"criticality": {"cpu": 7}}, "criticality of 'cpu'"),
        ({"bogus": 1}, "unknown AlarmPolicy field"),
    ],
)
def test_bad_policies_name_the_field(values, field):
    with pytest.raises(ValueError, match=field):
        AlarmPolicy.from_dict(values)


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="index has 120 points but scores has 3"):
        find_incidents(INDEX, np.zeros(3), "m")


def test_pages_ring_once_per_incident_when_it_is_confirmed():
    policy = AlarmPolicy(threshold=0.99, merge_gap_s=600)  # two points confirm
    stamps = INDEX.as_unit("ns").asi8
    # A lone alarm (never confirmed); a pair 3 minutes apart (pages at its second point);
    # a huge lone spike (pages at once); a flapping run (pages once, at its second point).
    scores = scores_with((5, 6, 0.995), (30, 31, 0.995), (33, 34, 0.999), (60, 61, 0.9999999),
                         (90, 95, 0.995))
    assert policy.pages(stamps, scores).tolist() == [33, 60, 91]
    assert AlarmPolicy(threshold=0.99, min_points=1, merge_gap_s=600).pages(
        stamps, scores).tolist() == [5, 30, 60, 90]
    assert policy.pages(stamps, scores, threshold=0.9995).tolist() == [60]


def test_a_lone_point_rarity_below_one_is_refused():
    with pytest.raises(ValueError, match="lone_point_rarity"):
        AlarmPolicy(lone_point_rarity=0.5)


def test_the_default_threshold_is_one_budget_in_time_whatever_the_step():
    from models.alarms import ALARM_THRESHOLD, DEFAULT_CHANCE_ALARMS_PER_MONTH, MONTH_S

    policy = AlarmPolicy()
    assert pytest.approx((1 - ALARM_THRESHOLD) * MONTH_S / 60) == DEFAULT_CHANCE_ALARMS_PER_MONTH
    assert policy.threshold_at(60.0) == pytest.approx(0.9999, abs=1e-15)
    assert policy.threshold_at(300.0) == pytest.approx(0.9995, abs=1e-15)
    assert policy.threshold_at(10.0) == pytest.approx(1 - 1e-4 / 6, abs=1e-15)
    assert policy.threshold_at(86400.0) == 0.99  # never below the expected range's score
    assert policy.threshold_at(0.0) == policy.threshold_at(60.0)  # one point: the reference
    # Chance alarms per month are the same at every step: points per month × tail.
    for step in (10.0, 60.0, 300.0, 3600.0):
        assert MONTH_S / step * (1 - policy.threshold_at(step)) == pytest.approx(4.32)
    # A fixed threshold (a policy file's, a request's) holds at every step.
    fixed = AlarmPolicy(threshold=0.999)
    assert fixed.threshold_at(10.0) == fixed.threshold_at(300.0) == 0.999
    assert AlarmPolicy(chance_alarms_per_month=43.2).threshold_at(60.0) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="chance_alarms_per_month"):
        AlarmPolicy(chance_alarms_per_month=0)


def test_incidents_and_pages_use_the_threshold_of_the_series_step():
    # 0.9997 is below the 1-minute threshold (0.9999) and above the 5-minute one (0.9995).
    for step, expected in (("1min", 0), ("5min", 1)):
        index = pd.date_range("2026-01-01", periods=60, freq=step, tz="UTC")
        scores = np.zeros(60)
        scores[30:33] = 0.9997
        assert len(find_incidents(index, scores, "m")) == expected
        assert len(AlarmPolicy().pages(index.as_unit("ns").asi8, scores)) == expected


def test_a_refit_leaves_out_an_incident_still_open_at_its_instant_until_it_is_old():
    policy = AlarmPolicy(threshold=0.99, merge_gap_s=600, learn_incident_after_s=3600)
    stamps = INDEX.as_unit("ns").asi8
    minute = 60 * 10**9
    # An incident from minute 40 (flapping: 40-44, 50-59), still open at minute 60.
    scores = scores_with((5, 7, 0.995), (40, 45, 0.995), (50, 60, 0.995))
    assert unlearnt_rows(stamps, scores, 0.99, policy, stamps[60]) == slice(40, 60)
    # Once it is as old as learn_incident_after_s, the change is learnt.
    assert unlearnt_rows(stamps, scores, 0.99, policy, stamps[40] + 60 * minute) == slice(0, 0)
    # Closed (its last point a merge gap before the refit): learnt.
    assert unlearnt_rows(stamps, scores, 0.99, policy, stamps[59] + 10 * minute) == slice(0, 0)
    # Still open: every row from its start to the refit, quiet ones between alarms too.
    assert unlearnt_rows(stamps, scores, 0.99, policy, stamps[59] + 9 * minute) == slice(40, 68)
    # Only the rows before the refit instant are scores it has seen.
    assert unlearnt_rows(stamps, scores, 0.99, policy, stamps[55]) == slice(40, 55)


def test_an_incident_that_never_paged_is_learnt():
    stamps = INDEX.as_unit("ns").asi8
    lone = scores_with((50, 51, 0.995))  # one alarmed point: not confirmed
    assert unlearnt_rows(stamps, lone, 0.99, AlarmPolicy(threshold=0.99), stamps[55]) == slice(0, 0)
    assert unlearnt_rows(stamps, lone, 0.99, AlarmPolicy(threshold=0.99, min_points=1),
                         stamps[55]) == slice(50, 55)
    # Unscored rows (NaN) never alarm; 0 disables the rule.
    assert unlearnt_rows(stamps, np.full(len(INDEX), np.nan), 0.99, POLICY, stamps[55]) == slice(0, 0)
    assert unlearnt_rows(stamps, lone, 0.99, AlarmPolicy(threshold=0.99, min_points=1,
                                                        learn_incident_after_s=0),
                         stamps[55]) == slice(0, 0)
