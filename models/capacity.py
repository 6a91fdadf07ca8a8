"""Capacity planning: replicas from a demand forecast, a cluster plan by priority, right-sizing.

At every step the replicas are the larger of two needs, bounded by
``[min_replicas, max_replicas]``:

- the median forecast (q50) served at ``target_utilisation`` — the operating
  point, as a Kubernetes HPA keeps it for the demand it observes;
- the forecast quantile of the service's priority tier (q90 for tiers 1–3,
  the median for background and analytics work) served at no more than
  ``peak_utilisation`` (default 100 %): the headroom against a breach.

So a service whose forecast is sure of itself runs at its target, and one
whose q90 lies well above the median gets the replicas that q90 needs, no
more. Provisioning the q90 at the target instead stacks two margins (the
quantile's and the utilisation's) and pays for both at every step: far more
replica-hours for a small further drop in breached steps (figures in
benchmarks/README.md, "Scaling"). Scheduled events multiply the forecast.

The schedule runs, at every step, the most replicas needed within the next
``max(lead_time, stabilisation)``: a replica is started at least its lead time
before the demand that needs it, and a scale-down happens only when the
forecast shows no need for the extra replicas during the whole stabilisation
window (so the schedule never removes replicas it would have to add back
within that window).

Priority tiers: 1 critical client functions (diagnosis, security), 2
financial transactions, 3 interactive user services, 4 background
processing, 5 analytics and reporting. Under a cluster budget
(:func:`cluster_plan`) tiers are served in that order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.base import check_int

#: The forecast column provisioned for, by priority tier.
PRIORITY_QUANTILE = {1: "q90", 2: "q90", 3: "q90", 4: "q50", 5: "q50"}
#: The largest demand, capacity, usage or resource request accepted: far beyond any metric (a
#: 64-bit counter stops below 2e19), and small enough that every product, ratio and sum of
#: the figures below stays a finite float.
MAX_QUANTITY = 1e30
#: The smallest demand one replica serves: a millionth of the demand's unit.
MIN_CAPACITY_PER_REPLICA = 1e-6
#: The lowest target or peak utilisation: 1 %.
MIN_UTILISATION = 0.01
#: The largest factor a scheduled event multiplies the forecast by.
MAX_EVENT_MULTIPLIER = 1000.0
#: Bounds of the cluster plan's CPU figures: a millicore (Kubernetes' smallest unit) to
#: 10,000 cores per replica, a billion cores in all, so replica counts stay finite integers.
MIN_CPU_PER_REPLICA = 0.001
MAX_CPU_PER_REPLICA = 10_000.0
MAX_TOTAL_CPU = 1e9
#: The most replicas a scaling policy's bounds allow, and the most counted anywhere else
#: (replicas running now, or needed in a cluster plan).
MAX_SCALING_REPLICAS = 100_000
MAX_REPLICA_COUNT = 1_000_000
#: The highest price of one unit of a resource request.
MAX_PRICE_PER_UNIT = 1e9
TIER_NAMES = {1: "critical client functions", 2: "financial transactions",
              3: "interactive user services", 4: "background processing",
              5: "analytics and reporting"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScalingPolicy:
    """How one service is scaled; every field is checked and named when wrong."""

    capacity_per_replica: float
    target_utilisation: float = 0.7
    min_replicas: int = 1
    max_replicas: int = 100
    lead_time_s: float = 120.0
    stabilisation_s: float = 300.0
    priority: int = 3
    peak_utilisation: float = 1.0

    def __post_init__(self) -> None:
        if not MIN_CAPACITY_PER_REPLICA <= self.capacity_per_replica <= MAX_QUANTITY:
            raise ValueError(f"capacity_per_replica={self.capacity_per_replica} must lie in "
                             f"[{MIN_CAPACITY_PER_REPLICA:g}, {MAX_QUANTITY:g}] (demand one "
                             "replica serves at 100 %)")
        if not MIN_UTILISATION <= self.target_utilisation <= 1:
            raise ValueError(f"target_utilisation={self.target_utilisation} must lie in "
                             f"[{MIN_UTILISATION}, 1]")
        if not self.target_utilisation <= self.peak_utilisation <= 1:
            raise ValueError(f"peak_utilisation={self.peak_utilisation} must lie in "
                             f"[target_utilisation={self.target_utilisation}, 1]")
        check_int("min_replicas", self.min_replicas, 0, MAX_SCALING_REPLICAS)
        check_int("max_replicas", self.max_replicas, 1, MAX_SCALING_REPLICAS)
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above "
                             f"max_replicas={self.max_replicas}")
        for name in ("lead_time_s", "stabilisation_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 7 * 86_400):
                raise ValueError(f"{name}={value} must lie in [0, 604800] seconds")
        check_int("priority", self.priority, 1, 5)

    def replicas_for(self, demand: np.ndarray, utilisation: float | None = None) -> np.ndarray:
        """Replicas that serve ``demand`` at ``utilisation`` (default: the target), in bounds."""
        per_replica = self.capacity_per_replica * (utilisation or self.target_utilisation)
        needed = np.ceil(np.maximum(np.nan_to_num(demand, nan=0.0), 0.0) / per_replica - 1e-9)
        return np.clip(needed, self.min_replicas, self.max_replicas).astype(int)


@dataclasses.dataclass(frozen=True)
class ScheduledEvent:
    """Expected demand × ``multiplier`` between ``start`` and ``end`` (a sale, a batch run)."""

    start: pd.Timestamp
    end: pd.Timestamp
    multiplier: float

    def __post_init__(self) -> None:
        if not 0 < self.multiplier <= MAX_EVENT_MULTIPLIER:
            raise ValueError(f"event multiplier={self.multiplier} must lie in "
                             f"(0, {MAX_EVENT_MULTIPLIER:g}]")
        if self.end <= self.start:
            raise ValueError(f"event end {self.end} is not after its start {self.start}")


@dataclasses.dataclass(frozen=True)
class ReplicaPlan:
    """Replicas now and over the horizon, with the expected utilisation and the reason."""

    replicas_now: int
    schedule: pd.DataFrame  # index: timestamps; columns: demand, needed, replicas, utilisation
    reason: str


def event_multiplier(index: pd.DatetimeIndex, events: Sequence[ScheduledEvent]) -> np.ndarray:
    """At each timestamp, the largest multiplier of the events covering it (1 outside all)."""
    factor = np.ones(len(index))
    for event in events:
        inside = (index >= event.start) & (index < event.end)
        factor[inside] = np.maximum(factor[inside], event.multiplier)
    return factor


def _forward_max(values: np.ndarray, window: int) -> np.ndarray:
    """At each position, the maximum of ``values`` over it and the next ``window`` positions."""
    if window <= 0:
        return values.copy()
    reversed_max = pd.Series(values[::-1]).rolling(window + 1, min_periods=1).max()
    return reversed_max.to_numpy()[::-1].astype(values.dtype)


def plan_replicas(
    forecast: pd.DataFrame,
    policy: ScalingPolicy,
    current_replicas: int,
    events: Sequence[ScheduledEvent] = (),
) -> ReplicaPlan:
    """The replicas to run now and at every forecast step (see the module docstring).

    ``forecast`` is indexed by regular timestamps with ``yhat`` and the
    quantile columns; its first row is the step that starts now.
    """
    check_int("current_replicas", current_replicas, 0, MAX_REPLICA_COUNT)
    if len(forecast) == 0:
        raise ValueError("the forecast is empty; ask for a horizon of at least one step")
    if not np.isfinite(forecast[["yhat", "q50"]].to_numpy(dtype="float64")).any():
        raise ValueError("the forecast holds no finite value (a history of gaps?); "
                         "no plan can be made from it")
    index = pd.DatetimeIndex(forecast.index)
    column = PRIORITY_QUANTILE[policy.priority]
    multiplier = event_multiplier(index, events)
    demand = forecast[column].to_numpy(dtype="float64") * multiplier
    median = forecast["q50"].to_numpy(dtype="float64") * multiplier
    needed = np.maximum(policy.replicas_for(median),
                        policy.replicas_for(demand, policy.peak_utilisation))
    step_s = (index[1] - index[0]).total_seconds() if len(index) > 1 else 60.0
    window = math.ceil(max(policy.lead_time_s, policy.stabilisation_s) / step_s)
    replicas = _forward_max(needed, window)
    expected = forecast["yhat"].to_numpy(dtype="float64") * multiplier
    utilisation = expected / (np.maximum(replicas, 1) * policy.capacity_per_replica)
    schedule = pd.DataFrame({"demand": demand, "needed": needed, "replicas": replicas,
                             "utilisation": utilisation}, index=index)
    return ReplicaPlan(replicas_now=int(replicas[0]), schedule=schedule,
                       reason=_reason(schedule, policy, current_replicas, column, events))


def _reason(schedule: pd.DataFrame, policy: ScalingPolicy, current: int, column: str,
            events: Sequence[ScheduledEvent]) -> str:
    now = int(schedule["replicas"].iloc[0])
    peak_at = schedule["demand"].idxmax()
    peak = float(schedule["demand"].max())
    tier = (f"tier {policy.priority} ({TIER_NAMES[policy.priority]}) provisions for {column} "
            f"at up to {policy.peak_utilisation:.0%} and the median at "
            f"{policy.target_utilisation:.0%} target utilisation")
    parts = [f"{tier}: forecast {column} peak {peak:.4g} at {peak_at.isoformat()}; at most "
             f"{int(schedule['needed'].max())} replica(s) needed"]
    if now > current:
        parts.append(f"scale up from {current} to {now} now: demand within the next "
                     f"{policy.lead_time_s:g} s lead time needs them")
    elif now < current:
        parts.append(f"scale down from {current} to {now}: the forecast needs no more than "
                     f"{now} for the next {policy.stabilisation_s:g} s stabilisation window")
    else:
        parts.append(f"keep {current}")
    ups = schedule.index[np.flatnonzero(np.diff(schedule["replicas"].to_numpy()) > 0) + 1]
    if len(ups):
        first_up = ups[0]
        parts.append(f"next scale-up to {int(schedule.loc[first_up, 'replicas'])} at "
                     f"{first_up.isoformat()}, ahead of the demand by the lead time")
    if events:
        parts.append(f"{len(events)} scheduled event(s) raise the forecast")
    if (schedule["needed"] >= policy.max_replicas).any():
        worst = float(schedule["utilisation"].max())
        parts.append(f"capped at max_replicas={policy.max_replicas}: expected utilisation up "
                     f"to {worst:.0%}")
    return "; ".join(parts)


# -- the cluster plan -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ServiceNeed:
    """What one service asks of the cluster."""

    service: str
    priority: int
    needed_replicas: int
    min_replicas: int = 0
    cpu_per_replica: float = 1.0

    def __post_init__(self) -> None:
        check_int(f"{self.service}: priority", self.priority, 1, 5)
        check_int(f"{self.service}: needed_replicas", self.needed_replicas, 0,
                  MAX_REPLICA_COUNT)
        check_int(f"{self.service}: min_replicas", self.min_replicas, 0, MAX_REPLICA_COUNT)
        if not MIN_CPU_PER_REPLICA <= self.cpu_per_replica <= MAX_CPU_PER_REPLICA:
            raise ValueError(f"{self.service}: cpu_per_replica={self.cpu_per_replica} must lie "
                             f"in [{MIN_CPU_PER_REPLICA} (a millicore), {MAX_CPU_PER_REPLICA:g}]")


@dataclasses.dataclass(frozen=True)
class Allocation:
    service: str
    priority: int
    needed_replicas: int
    allocated_replicas: int
    cpu: float
    loses: str


def cluster_plan(needs: Sequence[ServiceNeed], total_cpu: float) -> list[Allocation]:
    """Share ``total_cpu`` among services: minimums first, then whole tiers in priority order.

    Every service first gets its minimum, tier by tier while they fit. Then
    tier 1's full needs, then tier 2's, and so on; the first tier that does not
    fit shares what is left in proportion to its needs, and the tiers after it
    keep their minimum. Each allocation says what the service loses.
    """
    if not (math.isfinite(total_cpu) and 0 <= total_cpu <= MAX_TOTAL_CPU):
        raise ValueError(f"total_cpu={total_cpu} must be a number in [0, {MAX_TOTAL_CPU:g}]")
    names = [n.service for n in needs]
    if len(set(names)) != len(names):
        raise ValueError(f"services repeat in the plan: {sorted({n for n in names if names.count(n) > 1})}")
    left = float(total_cpu)
    allocated = {n.service: 0 for n in needs}
    ordered = sorted(needs, key=lambda n: (n.priority, n.service))
    for need in ordered:  # minimums, in priority order
        floor = min(need.min_replicas, need.needed_replicas) if need.needed_replicas else 0
        take = min(floor, int(left // need.cpu_per_replica + 1e-9))
        allocated[need.service] = take
        left -= take * need.cpu_per_replica
    for tier in range(1, 6):
        members = [n for n in ordered if n.priority == tier]
        extra = {n.service: (n.needed_replicas - allocated[n.service]) * n.cpu_per_replica
                 for n in members}
        wanted = sum(extra.values())
        if wanted <= 0:
            continue
        share = min(1.0, left / wanted)
        for n in members:
            more = math.floor(extra[n.service] * share / n.cpu_per_replica + 1e-9)
            allocated[n.service] += more
            left -= more * n.cpu_per_replica
        if share < 1.0:
            # Whole replicas left over after rounding go to this tier's services in order.
            for n in members:
                while (allocated[n.service] < n.needed_replicas
                       and left + 1e-9 >= n.cpu_per_replica):
                    allocated[n.service] += 1
                    left -= n.cpu_per_replica
            break
    out = []
    for n in ordered:
        got = allocated[n.service]
        if got >= n.needed_replicas:
            loses = "nothing"
        else:
            utilisation = n.needed_replicas / got if got else math.inf
            loses = (f"{n.needed_replicas - got} of {n.needed_replicas} replicas: "
                     + (f"runs at about {utilisation:.0%} of its target load" if got
                        else "not served at all")
                     + f" (tier {n.priority}, {TIER_NAMES[n.priority]})")
        out.append(Allocation(service=n.service, priority=n.priority,
                              needed_replicas=n.needed_replicas, allocated_replicas=got,
                              cpu=got * n.cpu_per_replica, loses=loses))
    return out


# -- right-sizing -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RightSizing:
    service: str
    resource: str
    current_request: float
    recommended_request: float
    usage_p50: float
    usage_p95: float
    usage_max: float
    under_used: bool
    saving: float
    reason: str


def right_size(service: str, resource: str, usage: np.ndarray, current_request: float,
               *, percentile: float = 95.0, headroom: float = 0.15,
               under_used_ratio: float = 0.5, price_per_unit: float = 0.0) -> RightSizing:
    """Recommend a resource request from usage percentiles (vertical scaling).

    The recommendation is the ``percentile`` of usage plus ``headroom``, never
    below the largest usage seen (memory that is needed once is needed). A
    request is *under-used* when the recommendation is below
    ``under_used_ratio`` of it; the saving is the freed amount × ``price_per_unit``.
    """
    values = np.asarray(usage, dtype="float64")
    values = values[np.isfinite(values)]
    if values.size < 10:
        raise ValueError(f"{service}/{resource}: {values.size} usage samples; need at least 10")
    outside = np.flatnonzero((values < 0) | (values > MAX_QUANTITY))
    if outside.size:
        raise ValueError(f"{service}/{resource}: usage sample {values[outside[0]]} is outside "
                         f"[0, {MAX_QUANTITY:g}]")
    if not 0 < current_request <= MAX_QUANTITY:
        raise ValueError(f"{service}/{resource}: current_request={current_request} must lie "
                         f"in (0, {MAX_QUANTITY:g}]")
    if not 0 <= price_per_unit <= MAX_PRICE_PER_UNIT:
        raise ValueError(f"{service}/{resource}: price_per_unit={price_per_unit} must lie "
                         f"in [0, {MAX_PRICE_PER_UNIT:g}]")
    p50, p95, high = (float(np.percentile(values, q)) for q in (50, percentile, 100))
    recommended = max(p95 * (1 + headroom), high if resource == "memory" else 0.0)
    under = recommended < under_used_ratio * current_request
    saving = max(current_request - recommended, 0.0) * price_per_unit
    reason = (f"p{percentile:g} usage {p95:.4g} + {headroom:.0%} headroom"
              + (f", at least the peak {high:.4g} for memory" if resource == "memory" else "")
              + f": request {recommended:.4g} instead of {current_request:.4g}")
    if under:
        reason += f"; under-used (uses {p95 / current_request:.0%} at p{percentile:g})"
    return RightSizing(service=service, resource=resource, current_request=current_request,
                       recommended_request=recommended, usage_p50=p50, usage_p95=p95,
                       usage_max=high, under_used=bool(under), saving=saving, reason=reason)
