"""Event-level accuracy of alarms against labels, without point-adjustment.

An *event* is a run of consecutive labelled points; an *alarm run* a run of
consecutive alarmed points. An event is found when an alarm falls inside it;
an alarm run is correct when it touches an event. Each counts once, however
long it is.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` positions of the runs of True in ``mask``."""
    flags = np.asarray(mask, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate([[0], flags, [0]]))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


@dataclasses.dataclass(frozen=True)
class EventScores:
    n_events: int
    n_found: int
    n_alarm_runs: int
    n_correct_alarm_runs: int

    @property
    def recall(self) -> float:
        return self.n_found / self.n_events if self.n_events else float("nan")

    @property
    def precision(self) -> float:
        return self.n_correct_alarm_runs / self.n_alarm_runs if self.n_alarm_runs else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if np.isnan(p) or np.isnan(r) or p + r == 0:
            return 0.0 if (self.n_events or self.n_alarm_runs) else float("nan")
        return 2 * p * r / (p + r)

    def __add__(self, other: EventScores) -> EventScores:
        return EventScores(*(a + b for a, b in zip(
            dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


def event_scores(labels: np.ndarray, alarms: np.ndarray) -> EventScores:
    """Count events found and alarm runs that were right.

    Raises
    ------
    ValueError
        ``labels`` and ``alarms`` differ in length.
    """
    labels = np.asarray(labels, dtype=bool)
    alarms = np.asarray(alarms, dtype=bool)
    if labels.shape != alarms.shape:
        raise ValueError(f"labels has shape {labels.shape} but alarms has {alarms.shape}")
    events = runs(labels)
    alarm_runs = runs(alarms)
    found = sum(bool(alarms[a:b].any()) for a, b in events)
    correct = sum(bool(labels[a:b].any()) for a, b in alarm_runs)
    return EventScores(len(events), found, len(alarm_runs), correct)
