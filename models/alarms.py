"""From scores to alarms: threshold, merging of repeated alarms, severity P0–P3.

A page should mean one thing happening, told once. Points scoring at or above
the threshold are grouped into *incidents*: alarmed points closer together
than ``merge_gap_s`` belong to the same incident, so a flapping metric raises
one incident, not one per point. Each incident gets a severity from three
facts — how rare its peak was, how long it lasted and how critical the metric
is — on the scale the on-call rota uses:

* **P0** service unavailable — **P1** major features degraded —
  **P2** one feature affected — **P3** minor.

The rule is a points table (see :meth:`AlarmPolicy.severity`), deliberately
simple so that an engineer can predict it; the criticality of each metric is
configurable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.base import DEFAULT_THRESHOLD, check_fields

Severity = Literal["P0", "P1", "P2", "P3"]

#: How much a metric matters when it misbehaves: 1 (users cannot be served) … 4 (cosmetic).
DEFAULT_CRITICALITY: dict[str, int] = {
    "request_rate": 1,
    "error_rate": 1,
    "latency_p99": 2,
    "cpu_utilization": 3,
    "memory_utilization": 3,
    "queue_length": 3,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlarmPolicy:
    """How scores become incidents.

    Parameters
    ----------
    threshold
        Calibrated score at or above which a point is alarmed.
    merge_gap_s
        Alarmed points less than this many seconds apart are one incident.
    min_points
        Incidents with fewer alarmed points are dropped (1 keeps every alarm).
    criticality
        Metric name → 1 … 4; metrics not listed get ``default_criticality``.
    """

    threshold: float = DEFAULT_THRESHOLD
    # An alarm within the hour after the last one is the same incident: one page, as an
    # alerting stack's repeat interval would group it. On the NAB files the ensemble scores
    # 41.1 / 42.6 / 45.6 / 49.0 (standard) with gaps of 10 / 30 / 60 / 120 minutes.
    merge_gap_s: float = 3600.0
    min_points: int = 1
    criticality: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_CRITICALITY)
    )
    default_criticality: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold={self.threshold} must lie in (0, 1)")
        if not (self.merge_gap_s >= 0 and math.isfinite(self.merge_gap_s)):
            raise ValueError(f"merge_gap_s={self.merge_gap_s} must be a finite number >= 0")
        if self.min_points < 1:
            raise ValueError(f"min_points={self.min_points} must be >= 1")
        for metric, level in {**self.criticality, "default": self.default_criticality}.items():
            if level not in (1, 2, 3, 4):
                raise ValueError(f"criticality of {metric!r} is {level!r}; accepted: 1, 2, 3, 4")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AlarmPolicy:
        check_fields(cls, values)
        merged = dict(values)
        if "criticality" in merged:
            merged["criticality"] = {**DEFAULT_CRITICALITY, **merged["criticality"]}
        return cls(**merged)

    def criticality_of(self, metric: str) -> int:
        return int(self.criticality.get(metric, self.default_criticality))

    def severity(self, peak_score: float, duration_s: float, metric: str) -> Severity:
        """Severity from points: rarity (0–2) + duration (0–2) + criticality (−1…+2).

        Rarity: peak ≥ 0.9999 → 2, ≥ 0.999 → 1. Duration: ≥ 15 min → 1,
        ≥ 1 h → 2. Criticality 1 → +2, 2 → +1, 3 → 0, 4 → −1. Then ≥ 5 → P0,
        4 → P1, 3 → P2, otherwise P3. A request rate that drops out for a
        quarter of an hour is P0; a brief CPU blip is P3.
        """
        rarity = 2 if peak_score >= 0.9999 else 1 if peak_score >= 0.999 else 0
        duration = 2 if duration_s >= 3600 else 1 if duration_s >= 900 else 0
        weight = {1: 2, 2: 1, 3: 0, 4: -1}[self.criticality_of(metric)]
        points = rarity + duration + weight
        if points >= 5:
            return "P0"
        if points == 4:
            return "P1"
        if points == 3:
            return "P2"
        return "P3"


@dataclasses.dataclass(frozen=True)
class Incident:
    """A group of alarmed points of one series. ``end`` is the last alarmed point."""

    start: pd.Timestamp
    end: pd.Timestamp
    n_points: int
    peak_at: pd.Timestamp
    peak_position: int
    peak_score: float
    severity: Severity

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


def find_incidents(
    index: pd.DatetimeIndex, scores: np.ndarray, metric: str, policy: AlarmPolicy | None = None
) -> list[Incident]:
    """Group the alarmed points of one scored window into incidents.

    Raises
    ------
    ValueError
        ``index`` and ``scores`` differ in length.
    """
    policy = policy or AlarmPolicy()
    scores = np.asarray(scores, dtype="float64")
    if len(index) != len(scores):
        raise ValueError(f"index has {len(index)} points but scores has {len(scores)}")
    alarmed = np.flatnonzero(np.nan_to_num(scores, nan=0.0) >= policy.threshold)
    if alarmed.size == 0:
        return []
    stamps = index.as_unit("ns").asi8[alarmed]
    # A new incident starts where the gap to the previous alarmed point exceeds merge_gap_s.
    breaks = np.flatnonzero(np.diff(stamps) > policy.merge_gap_s * 1e9) + 1
    incidents = []
    for group in np.split(alarmed, breaks):
        if group.size < policy.min_points:
            continue
        peak = int(group[np.argmax(scores[group])])
        start, end = index[group[0]], index[group[-1]]
        # A single alarmed point lasts one step, not zero seconds.
        duration = max((end - start).total_seconds(), _step_s(index))
        incidents.append(
            Incident(
                start=start,
                end=end,
                n_points=int(group.size),
                peak_at=index[peak],
                peak_position=peak,
                peak_score=float(scores[peak]),
                severity=policy.severity(float(scores[peak]), duration, metric),
            )
        )
    return incidents


def _step_s(index: pd.DatetimeIndex) -> float:
    if len(index) < 2:
        return 0.0
    return float(np.median(np.diff(index.as_unit("ns").asi8))) / 1e9
