"""From scores to alarms: threshold, merging of repeated alarms, severity P0–P3.

A page should mean one thing happening, told once. Points scoring at or above
the threshold are grouped into *incidents*: alarmed points closer together
than ``merge_gap_s`` belong to the same incident, so a flapping metric raises
one incident, not one per point. Each incident gets a severity from three
facts — how rare its peak was, how long it lasted and how critical the metric
is — on the scale the on-call rota uses:

* **P0** service unavailable — **P1** major features degraded —
  **P2** one feature affected — **P3** minor.

An incident *pages* once it is confirmed: when it holds ``min_points``
alarmed points (two by default), or earlier when one point is
``lone_point_rarity`` times rarer than the threshold (a huge spike needs no
second point). Until then its points are reported as anomalous, but no
incident is raised. :meth:`AlarmPolicy.pages` gives the moment each incident is
confirmed, which is when a pager would ring.

The severity rule is a points table (see :meth:`AlarmPolicy.severity`), deliberately
simple so that an engineer can predict it; the criticality of each metric is
configurable.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from models.base import check_fields

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


#: Alarm threshold at a 1-minute step: a point pages when the ensemble finds it rarer than 1 in
#: 10,000 training points (about once a week per series if nothing were wrong). At 0.99, 1 point
#: in 100 alarms by construction (14 a day per series at a 1-minute step), which buries real
#: incidents under chance pages; a rarer threshold gives up little recall, since a real incident
#: is far rarer than either. Measurements: benchmarks/README.md, "Detection on the synthetic fleet".
ALARM_THRESHOLD = 0.9999
#: The step at which the default policy's threshold is ``ALARM_THRESHOLD``.
REFERENCE_STEP_S = 60.0
#: Seconds in the month of a budget (30 days).
MONTH_S = 30 * 86400.0
#: The default budget: points per series per month that may alarm by chance. The same budget at
#: every step, so that a 10-second and a 5-minute series alarm as often in time; it is
#: ``ALARM_THRESHOLD`` at a 1-minute step (1e-4 of 43,200 points), 0.9995 at 5 minutes.
DEFAULT_CHANCE_ALARMS_PER_MONTH = 4.32  # (1 - ALARM_THRESHOLD) * MONTH_S / REFERENCE_STEP_S
#: However coarse the step, the threshold stays at or above this (the expected range's score).
LOWEST_THRESHOLD = 0.99


@dataclasses.dataclass(frozen=True, kw_only=True)
class AlarmPolicy:
    """How scores become incidents.

    Parameters
    ----------
    threshold
        Calibrated score at or above which a point is alarmed, whatever the step; ``None``
        (default): from ``chance_alarms_per_month`` and the series' step
        (:meth:`threshold_at`).
    chance_alarms_per_month
        Points of one series per 30 days that may score at or above the threshold by
        chance, were the scores calibrated: the threshold is ``1 − budget × step / 30
        days`` (never below ``LOWEST_THRESHOLD``), so a series alarms as often in time
        whatever its step. Pages are fewer: alarmed points merge into incidents and an
        incident pages once confirmed.
    merge_gap_s
        Alarmed points less than this many seconds apart are one incident.
    min_points
        Alarmed points an incident needs to page (1: every alarm pages).
    resolve_after_points
        An incident's alert resolves once this many steps have passed since its last
        alarmed point (the merge gap still makes a later alarm the same incident).
    lone_point_rarity
        An incident with fewer than ``min_points`` points still pages when
        its peak's tail probability is this many times smaller than the
        threshold's (at 0.9999 and 1000: a peak of 0.9999999).
    learn_incident_after_s
        A refit does not learn the rows of an incident still open at its instant
        (:func:`unlearnt_rows`) until the incident is this old; from then on a change
        that persists is learnt as the new normal (0: every refit learns every row).
    criticality
        Metric name → 1 … 4; metrics not listed get ``default_criticality``.
    """

    threshold: float | None = None
    chance_alarms_per_month: float = DEFAULT_CHANCE_ALARMS_PER_MONTH
    # An alarm within the hour after the last one is the same incident: one page, as an
    # alerting stack's repeat interval would group it. A longer gap pages a flapping metric
    # less often but may merge distinct incidents; an hour is the compromise. (Its alert
    # resolves sooner, after resolve_after_points quiet steps, and fires again if it returns.)
    merge_gap_s: float = 3600.0
    # One alarmed point is one in ten thousand by chance; two in an hour are far rarer, so
    # waiting for a second point removes most chance pages at the cost of paging one point
    # later. The lone-point exception (lone_point_rarity) keeps a single huge spike paging at
    # once, so requiring confirmation does not cost the spikes.
    min_points: int = 2
    # An alert ends a few steps after the problem, not a merge gap later: an on-call engineer
    # who fixed it sees it resolve. Three quiet steps ride over a point that just misses the
    # threshold in the middle of a spike.
    resolve_after_points: int = 3
    lone_point_rarity: float = 1000.0
    # A level shift being paged at midnight would be normal by morning if the nightly refit
    # learnt it, and its alert would end while the problem goes on. One day is long enough for
    # an on-call engineer to act on it, and short enough that a change meant to stay (a
    # migration, a new release's footprint) stops paging by the second night.
    learn_incident_after_s: float = 86400.0
    criticality: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_CRITICALITY)
    )
    default_criticality: int = 3

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold={self.threshold} must lie in (0, 1)")
        if not (self.chance_alarms_per_month > 0 and math.isfinite(self.chance_alarms_per_month)):
            raise ValueError(f"chance_alarms_per_month={self.chance_alarms_per_month} must be a "
                             "finite number > 0")
        if not (self.merge_gap_s >= 0 and math.isfinite(self.merge_gap_s)):
            raise ValueError(f"merge_gap_s={self.merge_gap_s} must be a finite number >= 0")
        if self.min_points < 1:
            raise ValueError(f"min_points={self.min_points} must be >= 1")
        if self.resolve_after_points < 1:
            raise ValueError(f"resolve_after_points={self.resolve_after_points} must be >= 1")
        if not (self.lone_point_rarity >= 1 and math.isfinite(self.lone_point_rarity)):
            raise ValueError(f"lone_point_rarity={self.lone_point_rarity} must be a finite "
                             "number >= 1")
        if not (self.learn_incident_after_s >= 0 and math.isfinite(self.learn_incident_after_s)):
            raise ValueError(f"learn_incident_after_s={self.learn_incident_after_s} must be a "
                             "finite number >= 0")
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

    def threshold_at(self, step_s: float) -> float:
        """The alarm threshold of a series sampled every ``step_s`` seconds.

        The fixed ``threshold`` if set; else ``1 − chance_alarms_per_month × step_s / 30
        days``, within ``[LOWEST_THRESHOLD, 1)``. Without a step (a one-point window) the
        reference step's, one minute.
        """
        return float(self.thresholds_at(np.array([step_s]))[0])

    def thresholds_at(self, steps_s: np.ndarray) -> np.ndarray:
        """:meth:`threshold_at` of every step in ``steps_s``."""
        steps = np.asarray(steps_s, dtype="float64")
        if self.threshold is not None:
            return np.full(steps.shape, self.threshold)
        steps = np.where((steps > 0) & np.isfinite(steps), steps, REFERENCE_STEP_S)
        tail = self.chance_alarms_per_month * steps / MONTH_S
        return np.clip(1.0 - tail, LOWEST_THRESHOLD, 1.0 - 1e-12)

    def at_step(self, step_s: float) -> AlarmPolicy:
        """This policy with its threshold fixed for a series sampled every ``step_s`` seconds."""
        if self.threshold is not None:
            return self
        return dataclasses.replace(self, threshold=self.threshold_at(step_s))

    def for_index(self, index: pd.DatetimeIndex | np.ndarray) -> AlarmPolicy:
        """:meth:`at_step` at the median step of ``index`` (timestamps, or int64 nanoseconds)."""
        if self.threshold is not None:
            return self
        return self.at_step(median_step_s(index))

    def _fixed(self) -> float:
        if self.threshold is None:
            raise ValueError("the alarm policy's threshold depends on the series' step; "
                             "resolve it with at_step() or for_index() first")
        return self.threshold

    @classmethod
    def from_file(cls, path: str | Path) -> AlarmPolicy:
        """A policy from a JSON file such as ``{"threshold": 0.995, "merge_gap_s": 900,
        "criticality": {"payments_latency": 1}}``; errors name the file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(f"alarm policy {path}: {error}") from error

    @property
    def lone_peak(self) -> float:
        """The score at which one alarmed point pages on its own."""
        return 1.0 - (1.0 - self._fixed()) / self.lone_point_rarity

    def confirms(self, group_scores: np.ndarray) -> bool:
        """Whether one group of alarmed points' scores is an incident that pages."""
        return group_scores.size >= self.min_points or bool(group_scores.max() >= self.lone_peak)

    def pages(self, timestamps_ns: np.ndarray, scores: np.ndarray,
              threshold: float | None = None) -> np.ndarray:
        """:func:`page_positions` under this policy (at ``threshold`` if given, else at the
        policy's threshold for the median step of ``timestamps_ns``)."""
        if threshold is None:
            threshold = self.for_index(np.asarray(timestamps_ns, dtype="int64")).threshold
        return page_positions(timestamps_ns, scores, threshold,
                              self.merge_gap_s, self.min_points, self.lone_point_rarity)

    def criticality_of(self, metric: str) -> int:
        return int(self.criticality.get(metric, self.default_criticality))

    def severity(self, peak_score: float, duration_s: float, metric: str) -> Severity:
        """Severity from points: rarity (0–2) + duration (0–2) + criticality (−1…+2).

        Rarity, against the threshold's tail ``t = 1 − threshold``: a peak
        whose tail ``1 − peak`` is at most ``t / 100`` → 2, at most ``t / 10``
        → 1 (at threshold 0.99: peak ≥ 0.9999 → 2, ≥ 0.999 → 1; at the
        default 0.9999: ≥ 0.999999 → 2, ≥ 0.99999 → 1). Duration: ≥ 15 min → 1,
        ≥ 1 h → 2. Criticality 1 → +2, 2 → +1, 3 → 0, 4 → −1. Then ≥ 5 → P0,
        4 → P1, 3 → P2, otherwise P3. A request rate that drops out for a
        quarter of an hour is P0; a brief CPU blip is P3.
        """
        tail, at_threshold = 1.0 - peak_score, 1.0 - self._fixed()
        # A relative tolerance: 1 - 0.9999 is not exactly 1e-4 in floating point.
        rarity = (2 if tail <= at_threshold / 100 * (1 + 1e-9)
                  else 1 if tail <= at_threshold / 10 * (1 + 1e-9) else 0)
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
    scores = np.asarray(scores, dtype="float64")
    if len(index) != len(scores):
        raise ValueError(f"index has {len(index)} points but scores has {len(scores)}")
    policy = (policy or AlarmPolicy()).for_index(index)
    alarmed = np.flatnonzero(np.nan_to_num(scores, nan=0.0) >= policy.threshold)
    if alarmed.size == 0:
        return []
    stamps = index.as_unit("ns").asi8[alarmed]
    # A new incident starts where the gap to the previous alarmed point exceeds merge_gap_s.
    breaks = np.flatnonzero(np.diff(stamps) > policy.merge_gap_s * 1e9) + 1
    incidents = []
    for group in np.split(alarmed, breaks):
        if not policy.confirms(scores[group]):
            continue
        peak = int(group[np.argmax(scores[group])])
        start, end = index[group[0]], index[group[-1]]
        # A single alarmed point lasts one step, not zero seconds.
        duration = max((end - start).total_seconds(), median_step_s(index))
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


def page_positions(
    timestamps_ns: np.ndarray,
    scores: np.ndarray,
    threshold: float | np.ndarray,
    merge_gap_s: float,
    min_points: int = 1,
    lone_point_rarity: float = math.inf,
) -> np.ndarray:
    """Row positions at which incidents are confirmed: where a pager rings, once per incident.

    ``timestamps_ns`` are int64 nanoseconds, increasing. Points scoring at or
    above ``threshold`` less than ``merge_gap_s`` apart are one incident; it
    pages at its ``min_points``-th alarmed point, or at its first point whose
    tail probability is ``lone_point_rarity`` times smaller than the
    threshold's if that comes first; an incident that never qualifies does
    not page. ``threshold`` may also be one per point (a stream whose step changes).
    :meth:`AlarmPolicy.pages` applies a policy's settings.
    """
    values = np.nan_to_num(np.asarray(scores, dtype="float64"), nan=-np.inf)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype="float64"), values.shape)
    alarmed = np.flatnonzero(values >= thresholds)
    if alarmed.size == 0:
        return alarmed
    lone_peak = 1.0 - (1.0 - thresholds[alarmed]) / lone_point_rarity
    stamps = np.asarray(timestamps_ns, dtype="int64")[alarmed]
    starts = np.concatenate([[True], np.diff(stamps) > merge_gap_s * 1e9])
    group = np.cumsum(starts) - 1
    rank = np.arange(alarmed.size) - np.flatnonzero(starts)[group]
    qualifies = (rank == min_points - 1) | (values[alarmed] >= lone_peak)
    _, first = np.unique(group[qualifies], return_index=True)
    return alarmed[np.flatnonzero(qualifies)[first]]


def unlearnt_rows(timestamps_ns: np.ndarray, scores: np.ndarray, threshold: float | np.ndarray,
                  policy: AlarmPolicy, at_ns: int) -> slice:
    """The rows a refit at ``at_ns`` leaves out of its training: an incident still being paged.

    ``timestamps_ns`` (int64 nanoseconds, increasing) and ``scores`` are the series as
    scored live (NaN where it was not), ``threshold`` the alarm threshold (or one per row).
    The rows are those from the first alarmed point of the last incident before ``at_ns``
    up to ``at_ns``, when that incident is still open (its last alarmed point less than
    ``merge_gap_s`` before ``at_ns``), has paged (:func:`page_positions`), and began less than
    ``learn_incident_after_s`` before ``at_ns``; otherwise none (an empty slice).
    """
    stamps = np.asarray(timestamps_ns, dtype="int64")
    end = int(np.searchsorted(stamps, at_ns, side="left"))
    values = np.nan_to_num(np.asarray(scores, dtype="float64")[:end], nan=-np.inf)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype="float64"), stamps.shape)[:end]
    alarmed = np.flatnonzero(values >= thresholds)
    if alarmed.size == 0 or at_ns - stamps[alarmed[-1]] >= policy.merge_gap_s * 1e9:
        return slice(0, 0)
    breaks = np.flatnonzero(np.diff(stamps[alarmed]) > policy.merge_gap_s * 1e9)
    first = int(alarmed[breaks[-1] + 1] if breaks.size else alarmed[0])
    if at_ns - stamps[first] >= policy.learn_incident_after_s * 1e9:
        return slice(0, 0)
    paged = page_positions(stamps[first:end], values[first:end], thresholds[first:end],
                           policy.merge_gap_s, policy.min_points, policy.lone_point_rarity)
    return slice(first, end) if paged.size else slice(0, 0)


def median_step_s(index: pd.DatetimeIndex | np.ndarray) -> float:
    """The median step of ``index`` (timestamps, or int64 nanoseconds) in seconds; 0 for one point."""
    stamps = (index.as_unit("ns").asi8 if isinstance(index, pd.DatetimeIndex)
              else np.asarray(index, dtype="int64"))
    if len(stamps) < 2:
        return 0.0
    return float(np.median(np.diff(stamps))) / 1e9
