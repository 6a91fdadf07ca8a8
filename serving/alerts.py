"""Incidents as Alertmanager alerts, so that existing alerting stacks take them as they are.

Each alert has the shape of an alert in Alertmanager's webhook payload
(``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``generatorURL``, ``fingerprint``). An incident is ``firing`` (with the zero
``endsAt`` Alertmanager uses for open alerts) until the alarm policy's
``resolve_after_points`` steps have passed since its last alarmed point, then
``resolved`` at that point plus one step: it ends a few steps after the
problem, whatever the window length or the merge gap. An incident that alarms
again within the merge gap is the same incident (same ``startsAt``), and fires
again. The fingerprint is, as in Alertmanager, a
hash of the label set alone, so the same alert sent by successive requests
has the same fingerprint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from models.service_incidents import ServiceIncident
    from serving.scoring import SeriesVerdict

ALERT_NAME = "MetricAnomaly"
SERVICE_ALERT_NAME = "ServiceMetricsDiverge"
#: Alertmanager's "no end yet" timestamp.
OPEN_END = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert, its fields named as Alertmanager names them."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: dt.datetime  # Alertmanager's field names, camelCase
    endsAt: dt.datetime
    generatorURL: str
    fingerprint: str


def fingerprint(labels: dict[str, str]) -> str:
    text = "\x00".join(f"{k}\x00{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _status(end: dt.datetime, window_end: dt.datetime, step: dt.timedelta,
            resolve_after: dt.timedelta) -> tuple[Literal["firing", "resolved"], dt.datetime]:
    if window_end - end < resolve_after:
        return "firing", OPEN_END
    return "resolved", end + step


def series_alerts(result: SeriesVerdict, window_end: dt.datetime, step: dt.timedelta,
                  resolve_after: dt.timedelta, generator_url: str) -> list[Alert]:
    ranges = {a.timestamp: (a.expected_low, a.expected_high) for a in result.anomalies}
    alerts = []
    for incident in result.incidents:
        labels = {"alertname": ALERT_NAME, "service": result.service, "metric": result.metric,
                  "severity": incident.severity}
        low, high = ranges.get(incident.peak_at, (float("nan"), float("nan")))
        status, ends = _status(incident.end, window_end, step, resolve_after)
        alerts.append(Alert(
            status=status, labels=labels,
            annotations={"summary": f"{result.metric} of {result.service} is anomalous",
                         "description": incident.reason,
                         "expected_range": f"{low:.6g} to {high:.6g}",
                         "peak_value": f"{incident.peak_value:.6g}",
                         "peak_score": f"{incident.peak_score:.6f}"},
            startsAt=incident.start, endsAt=ends, generatorURL=generator_url,
            fingerprint=fingerprint(labels)))
    return alerts


def service_alerts(incident: ServiceIncident, window_end: dt.datetime, step: dt.timedelta,
                   resolve_after: dt.timedelta, generator_url: str) -> Alert:
    labels = {"alertname": SERVICE_ALERT_NAME, "service": incident.service,
              "metric": incident.peak_metric, "severity": incident.severity}
    status, ends = _status(incident.end, window_end, step, resolve_after)
    return Alert(
        status=status, labels=labels,
        annotations={"summary": f"{', '.join(incident.metrics)} of {incident.service} no longer "
                                "move with their drivers",
                     "description": incident.diagnosis,
                     "expected_value": f"{incident.expected_value:.6g}",
                     "peak_value": f"{incident.peak_value:.6g}"},
        startsAt=incident.start, endsAt=ends, generatorURL=generator_url,
        fingerprint=fingerprint(labels))
