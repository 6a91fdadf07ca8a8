"""Capacity planning: replicas from a forecast, the cluster plan, right-sizing."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.capacity import (
    MAX_CPU_PER_REPLICA,
    MAX_EVENT_MULTIPLIER,
    MAX_PRICE_PER_UNIT,
    MAX_QUANTITY,
    MAX_REPLICA_COUNT,
    MAX_SCALING_REPLICAS,
    MAX_TOTAL_CPU,
    MIN_CAPACITY_PER_REPLICA,
    MIN_CPU_PER_REPLICA,
    MIN_UTILISATION,
    ScalingPolicy,
    ScheduledEvent,
    ServiceNeed,
    cluster_plan,
    plan_replicas,
    right_size,
)

INDEX = pd.date_range("2026-03-02T00:00Z", periods=24, freq="1min")


def forecast(demand: list[float] | np.ndarray, spread: float = 0.0) -> pd.DataFrame:
    demand = np.asarray(demand, dtype="float64")
    index = INDEX[: len(demand)]
    return pd.DataFrame({"yhat": demand, "q10": demand - spread, "q50": demand,
                         "q90": demand + spread}, index=index)


def test_replicas_follow_demand_over_capacity_times_target():
    policy = ScalingPolicy(capacity_per_replica=100, target_utilisation=0.5, min_replicas=2,
                           max_replicas=10)
    np.testing.assert_array_equal(policy.replicas_for(np.array([0, 50, 51, 400, 10_000])),
                                  [2, 2, 2, 8, 10])


def test_scale_up_happens_the_lead_time_ahead_and_down_only_after_stabilisation():
    demand = [100.0] * 10 + [400.0] * 4 + [100.0] * 10
    policy = ScalingPolicy(capacity_per_replica=100, target_utilisation=1.0, lead_time_s=180,
                           stabilisation_s=300, priority=4)
    plan = plan_replicas(forecast(demand), policy, current_replicas=1)
    replicas = plan.schedule["replicas"].to_numpy()
    # The peak at minutes 10-13 needs 4; with a 5-minute window (max of lead and stabilisation)
    # the 4 replicas run from minute 5 and stay to minute 13, then fall back to 1.
    assert replicas[4] == 1 and replicas[5] == 4 and replicas[13] == 4 and replicas[14] == 1
    assert plan.replicas_now == 1
    assert "next scale-up to 4 at 2026-03-02T00:05:00+00:00" in plan.reason


def test_priority_picks_the_quantile_provisioned_for():
    frame = forecast([100.0] * 5, spread=50.0)
    critical = plan_replicas(frame, ScalingPolicy(capacity_per_replica=10, target_utilisation=1.0,
                                                  priority=1), current_replicas=10)
    batch = plan_replicas(frame, ScalingPolicy(capacity_per_replica=10, target_utilisation=1.0,
                                               priority=5), current_replicas=10)
    assert critical.replicas_now == 15 and batch.replicas_now == 10
    assert "q90" in critical.reason and "q50" in batch.reason
    assert "scale up from 10 to 15" in critical.reason and "keep 10" in batch.reason


def test_the_median_runs_at_the_target_and_the_tier_quantile_within_the_peak():
    policy = ScalingPolicy(capacity_per_replica=10, target_utilisation=0.5, priority=2)
    # A sure forecast: the median at 50 % needs 20; its q90 (105) fits in 20 at 100 %.
    assert plan_replicas(forecast([100.0] * 5, spread=5.0), policy, 20).replicas_now == 20
    # An unsure one: the q90 (300) at 100 % needs 30, more than the median's 20.
    assert plan_replicas(forecast([100.0] * 5, spread=200.0), policy, 20).replicas_now == 30
    # A lower peak utilisation keeps more headroom for the same forecast: 300 / (10 × 0.75).
    cautious = ScalingPolicy(capacity_per_replica=10, target_utilisation=0.5, priority=2,
                             peak_utilisation=0.75)
    assert plan_replicas(forecast([100.0] * 5, spread=200.0), cautious, 20).replicas_now == 40
    with pytest.raises(ValueError, match=r"peak_utilisation=0.4 must lie in \[target_utilisation=0.5, 1\]"):
        ScalingPolicy(capacity_per_replica=10, target_utilisation=0.5, peak_utilisation=0.4)


def test_scheduled_events_raise_the_floor_and_max_replicas_caps_it():
    frame = forecast([100.0] * 10)
    sale = ScheduledEvent(INDEX[5], INDEX[8], 3.0)
    policy = ScalingPolicy(capacity_per_replica=100, target_utilisation=1.0, max_replicas=2,
                           lead_time_s=0, stabilisation_s=0, priority=4)
    plan = plan_replicas(frame, policy, current_replicas=1, events=[sale])
    assert plan.schedule["replicas"].tolist() == [1] * 5 + [2] * 3 + [1] * 2
    assert plan.schedule["utilisation"].iloc[6] == pytest.approx(1.5)
    assert "capped at max_replicas=2" in plan.reason and "1 scheduled event" in plan.reason


def test_a_scale_down_now_says_why():
    plan = plan_replicas(forecast([50.0] * 10), ScalingPolicy(capacity_per_replica=100),
                         current_replicas=6)
    assert plan.replicas_now == 1 and "scale down from 6 to 1" in plan.reason


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"capacity_per_replica": 0}, "capacity_per_replica=0"),
        ({"capacity_per_replica": -5}, "capacity_per_replica=-5"),
        ({"capacity_per_replica": 1, "min_replicas": 5, "max_replicas": 2}, "min_replicas=5"),
        ({"capacity_per_replica": 1, "target_utilisation": 1.5}, "target_utilisation"),
        ({"capacity_per_replica": 1, "priority": 6}, "priority=6"),
        ({"capacity_per_replica": 1, "lead_time_s": -1}, "lead_time_s"),
    ],
)
def test_bad_policies_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        ScalingPolicy(**fields)


def test_bad_events_are_refused():
    with pytest.raises(ValueError, match="multiplier"):
        ScheduledEvent(INDEX[0], INDEX[1], 0.0)
    with pytest.raises(ValueError, match="not after its start"):
        ScheduledEvent(INDEX[1], INDEX[0], 2.0)


def test_cluster_plan_serves_tiers_in_order_and_says_what_each_loses():
    needs = [
        ServiceNeed("reports", priority=5, needed_replicas=4, min_replicas=1),
        ServiceNeed("payments", priority=2, needed_replicas=6, min_replicas=2),
        ServiceNeed("auth", priority=1, needed_replicas=3, min_replicas=2),
        ServiceNeed("shop", priority=3, needed_replicas=6, min_replicas=1),
    ]
    plan = {a.service: a for a in cluster_plan(needs, total_cpu=13)}
    assert plan["auth"].allocated_replicas == 3 and plan["auth"].loses == "nothing"
    assert plan["payments"].allocated_replicas == 6
    # 13 - 3 - 6 = 4 CPUs left: reports keeps its minimum (1), shop gets the other 3.
    assert plan["reports"].allocated_replicas == 1
    assert plan["shop"].allocated_replicas == 3
    assert "3 of 6 replicas" in plan["shop"].loses and "tier 3" in plan["shop"].loses
    assert sum(a.cpu for a in plan.values()) <= 13
    everything = cluster_plan(needs, total_cpu=100)
    assert all(a.allocated_replicas == a.needed_replicas for a in everything)


def test_cluster_plan_refuses_repeated_services_and_negative_budgets():
    need = ServiceNeed("a", priority=1, needed_replicas=1)
    with pytest.raises(ValueError, match="repeat"):
        cluster_plan([need, need], total_cpu=4)
    with pytest.raises(ValueError, match="total_cpu"):
        cluster_plan([need], total_cpu=-1)


def test_right_sizing_from_usage_percentiles():
    rng = np.random.default_rng(0)
    cpu = rng.uniform(0.2, 0.4, 1000)
    sized = right_size("db", "cpu", cpu, current_request=2.0, price_per_unit=10.0)
    assert sized.recommended_request == pytest.approx(np.percentile(cpu, 95) * 1.15)
    assert sized.under_used and sized.saving == pytest.approx((2.0 - sized.recommended_request) * 10)
    memory = np.concatenate([np.full(999, 1.0), [3.0]])
    mem = right_size("db", "memory", memory, current_request=4.0)
    assert mem.recommended_request == 3.0 and not mem.under_used  # never below the peak
    with pytest.raises(ValueError, match="db/cpu: 3 usage samples"):
        right_size("db", "cpu", np.ones(3), current_request=1.0)
    with pytest.raises(ValueError, match="current_request=0"):
        right_size("db", "cpu", np.ones(20), current_request=0.0)


def test_cluster_figures_that_would_overflow_a_replica_count_are_refused():
    with pytest.raises(ValueError,
                       match=r"cpu_per_replica=5e-324 must lie in \[0.001 \(a millicore\), 10000\]"):
        ServiceNeed("tiny", priority=1, needed_replicas=1, cpu_per_replica=5e-324)
    with pytest.raises(ValueError, match=r"total_cpu=1e\+300 must be a number in \[0, 1e\+09\]"):
        cluster_plan([ServiceNeed("a", priority=1, needed_replicas=1)], 1e300)


def _finite_text(text: str) -> bool:
    return re.search(r"\b(inf|nan)\b", text, flags=re.IGNORECASE) is None


_QUANTITY = st.floats(-MAX_QUANTITY, MAX_QUANTITY)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(demand=st.lists(_QUANTITY, min_size=1, max_size=24),
       spread=st.floats(0, MAX_QUANTITY),
       capacity=st.floats(MIN_CAPACITY_PER_REPLICA, MAX_QUANTITY),
       multiplier=st.floats(0, MAX_EVENT_MULTIPLIER, exclude_min=True),
       bounds=st.tuples(st.integers(0, MAX_SCALING_REPLICAS),
                        st.integers(1, MAX_SCALING_REPLICAS)).map(sorted),
       utilisations=st.tuples(st.floats(MIN_UTILISATION, 1.0),
                              st.floats(MIN_UTILISATION, 1.0)).map(sorted),
       current=st.integers(0, MAX_REPLICA_COUNT), priority=st.integers(1, 5))
def test_every_accepted_plan_holds_finite_numbers(demand, spread, capacity, multiplier, bounds,
                                                  utilisations, current, priority):
    policy = ScalingPolicy(capacity_per_replica=capacity, min_replicas=bounds[0],
                           max_replicas=max(bounds[1], 1), priority=priority,
                           target_utilisation=utilisations[0], peak_utilisation=utilisations[1])
    event = ScheduledEvent(INDEX[0], INDEX[-1], multiplier)
    plan = plan_replicas(forecast(demand, spread), policy, current, [event])
    assert np.isfinite(plan.schedule.to_numpy(dtype="float64")).all()
    assert (plan.schedule[["needed", "replicas"]] >= policy.min_replicas).all().all()
    assert _finite_text(plan.reason), plan.reason


@settings(max_examples=80, deadline=None, derandomize=True)
@given(needs=st.lists(st.tuples(st.integers(1, 5), st.integers(0, MAX_REPLICA_COUNT),
                                st.integers(0, MAX_REPLICA_COUNT),
                                st.floats(MIN_CPU_PER_REPLICA, MAX_CPU_PER_REPLICA)),
                      min_size=1, max_size=6),
       total=st.floats(0, MAX_TOTAL_CPU))
def test_every_accepted_cluster_plan_holds_finite_numbers(needs, total):
    plan = cluster_plan([ServiceNeed(f"s{i}", *need) for i, need in enumerate(needs)], total)
    assert all(np.isfinite(a.cpu) and _finite_text(a.loses) for a in plan)
    assert sum(a.cpu for a in plan) <= total + 1e-6 * max(total, 1.0) or all(
        a.allocated_replicas <= a.needed_replicas for a in plan)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(usage=st.lists(st.floats(0, MAX_QUANTITY), min_size=10, max_size=40),
       current=st.floats(0, MAX_QUANTITY, exclude_min=True),
       price=st.floats(0, MAX_PRICE_PER_UNIT), resource=st.sampled_from(["cpu", "memory"]))
def test_every_accepted_right_sizing_holds_finite_numbers(usage, current, price, resource):
    sized = right_size("db", resource, np.asarray(usage), current, price_per_unit=price)
    figures = [sized.recommended_request, sized.usage_p50, sized.usage_p95, sized.usage_max,
               sized.saving]
    assert np.isfinite(figures).all() and _finite_text(sized.reason), sized
