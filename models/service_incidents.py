"""Multi-metric incidents of one service: the correlation detector's alarms, merged and named.

The correlation detector scores each metric of a service by how far it strays from what
its siblings predict. Its alarms on several metrics at overlapping times are one thing
happening, so they merge into one incident (alarms a few quiet steps apart at most, the
alarm policy's ``resolve_after_points``), named after the metric that strays furthest from
its prediction: calibrated scores saturate at 1 and cannot tell which metric moved most.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd

from models.alarms import AlarmPolicy, Incident, Severity, find_incidents, median_step_s
from models.correlation import CorrelationDetector


@dataclasses.dataclass(frozen=True)
class ServiceIncident:
    """Metrics of one service that stopped moving together, over one span of time."""

    service: str
    metrics: list[str]
    start: dt.datetime
    end: dt.datetime
    peak_at: dt.datetime
    peak_metric: str
    peak_score: float
    peak_value: float
    expected_value: float
    severity: Severity
    diagnosis: str


def service_incidents(
    service: str,
    windows: dict[str, pd.Series],
    single_scores: dict[str, pd.Series],
    detector: CorrelationDetector,
    policy: AlarmPolicy,
) -> list[ServiceIncident]:
    """Multi-metric incidents of one service: episodes of alarmed points, overlapping ones merged.

    ``windows`` holds the service's metrics on one index; ``single_scores`` each metric's
    own ensemble score on it, which the diagnosis quotes for the siblings of the peak.
    An episode ends after the policy's ``resolve_after_points`` quiet steps, not its merge
    gap: a service incident is a diagnosis of what is happening, and an outage must not be
    joined to an older, unrelated incident of the service and quote its diagnosis.
    """
    wide = pd.concat(windows, axis=1)
    policy = policy.for_index(wide.index)
    slack_s = policy.resolve_after_points * median_step_s(wide.index)
    episodes = dataclasses.replace(policy, merge_gap_s=slack_s)
    residuals = detector.residuals(wide)
    expected = detector.expected(wide)
    found = []
    for metric, scores in detector.score(wide).items():
        for incident in find_incidents(wide.index, scores.to_numpy(), metric, episodes):
            found.append((metric, incident))
    out = []
    slack = pd.Timedelta(seconds=slack_s)
    for group in _merged(found, slack):
        metric, peak = max(
            group, key=lambda item: abs(float(residuals[item[0]][item[1].peak_position]))
        )
        at = peak.peak_position
        siblings = {
            name: float(series.iloc[at]) if at < len(series) else float("nan")
            for name, series in single_scores.items()
            if name != metric
        }
        diagnosis = detector.diagnose(metric, float(residuals[metric][at]), siblings,
                                      policy.threshold)
        out.append(ServiceIncident(
            service=service,
            metrics=sorted({m for m, _ in group}),
            start=min(i.start for _, i in group),
            end=max(i.end for _, i in group),
            peak_at=peak.peak_at,
            peak_metric=metric,
            peak_score=peak.peak_score,
            peak_value=float(wide[metric].iloc[at]),
            expected_value=float(expected[metric][at]),
            severity=min((i.severity for _, i in group), key=lambda s: int(s[1])),
            diagnosis=diagnosis.text,
        ))
    return out


def _merged(found: list[tuple[str, Incident]], gap: pd.Timedelta
            ) -> list[list[tuple[str, Incident]]]:
    """Incidents of several metrics grouped where one starts within ``gap`` of the group's end."""
    groups: list[list[tuple[str, Incident]]] = []
    for item in sorted(found, key=lambda item: item[1].start):
        if groups and item[1].start <= max(i.end for _, i in groups[-1]) + gap:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups
