"""The scoring use-case: a model, windows of series and an alarm policy → what to report.

Every caller scores through :func:`score_windows`: the HTTP route (``POST /v1/score``),
the Serve deployment's batch path, ``aiops watch`` and the benchmarks, so that a stream
gets the same anomalies, incidents and alerts whichever way it arrives. The input is
pandas (one Series per window, on a UTC index), the output plain dataclasses that hold
the figures as the service reports them: scores to six decimals, so that the answer,
its alerts and ``/metrics`` quote the same numbers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import pandas as pd

from models.alarms import AlarmPolicy, Severity, find_incidents
from models.bundle import DetectorBundle, SeriesScores
from models.score_cache import ScoreCache
from models.service_incidents import ServiceIncident, service_incidents
from serving.alerts import Alert, series_alerts, service_alerts

#: Decimals of every score and expected bound the service reports.
REPORTED_DECIMALS = 6


def reported(x: float) -> float:
    """``x`` as the service reports it (a Python float, six decimals)."""
    return float(round(float(x), REPORTED_DECIMALS))


@dataclasses.dataclass(frozen=True)
class Window:
    """A window of one series: values on a strictly increasing UTC index, NaN for a gap."""

    service: str
    metric: str
    values: pd.Series


@dataclasses.dataclass(frozen=True)
class AnomalousPoint:
    timestamp: dt.datetime
    value: float
    score: float
    expected_low: float
    expected_high: float
    detectors: dict[str, float]
    reason: str


@dataclasses.dataclass(frozen=True)
class SeriesIncident:
    """Alarmed points of one series grouped by the alarm policy (see :mod:`models.alarms`)."""

    start: dt.datetime
    end: dt.datetime
    n_points: int
    peak_at: dt.datetime
    peak_score: float
    peak_value: float
    severity: Severity
    reason: str


@dataclasses.dataclass(frozen=True)
class SeriesVerdict:
    """What one window's scoring reports: a score per point (None for a gap) and its alarms."""

    service: str
    metric: str
    known_series: bool
    threshold: float
    detectors: list[str]
    scores: list[float | None]
    anomalies: list[AnomalousPoint]
    incidents: list[SeriesIncident]


@dataclasses.dataclass(frozen=True)
class ScoreQuery:
    """Windows to score together, under one alarm policy (one ``POST /v1/score``)."""

    windows: list[Window]
    policy: AlarmPolicy
    detectors: list[str] | None = None
    generator_url: str = "/v1/score"


@dataclasses.dataclass(frozen=True)
class Scoring:
    """What scoring a set of windows reports; ``threshold`` is the first series' (each
    verdict has its own: the policy's threshold depends on the series' step)."""

    threshold: float
    results: list[SeriesVerdict]
    service_incidents: list[ServiceIncident]
    alerts: list[Alert]


def score_windows(bundle: DetectorBundle, windows: Sequence[Window], policy: AlarmPolicy, *,
                  detectors: Sequence[str] | None = None,
                  generator_url: str = "/v1/score",
                  cache: ScoreCache | None = None) -> Scoring:
    """Score ``windows`` with ``bundle``; alarms, incidents and alerts follow ``policy``.

    ``detectors`` restricts the trained series to those detectors (a series the bundle has
    never seen is scored by the window baseline whatever is asked). The metrics of a
    service sent together are also scored jointly by the service's correlation model, on
    the timestamps of the first of them. ``generator_url`` goes into every alert.
    ``cache`` reuses scores already computed for a window that slid on (the result is the
    same without it; see :class:`models.score_cache.ScoreCache`).

    Raises
    ------
    ValueError
        A series is sent twice, or a window cannot be scored (the message names its
        position and series).
    """
    seen: dict[tuple[str, str], int] = {}
    for i, window in enumerate(windows):
        key = (window.service, window.metric)
        if key in seen:
            raise ValueError(
                f"series[{i}] repeats {window.service}/{window.metric} of series[{seen[key]}]; "
                "send each series once per request"
            )
        seen[key] = i
    by_service: dict[str, dict[str, pd.Series]] = {}
    single_scores: dict[str, dict[str, pd.Series]] = {}
    results = []
    for i, window in enumerate(windows):
        wanted = detectors if detectors and (window.service, window.metric) in bundle else None
        try:
            scored = bundle.score(window.service, window.metric, window.values, wanted,
                                  cache=cache)
        except ValueError as error:
            raise ValueError(f"series[{i}] ({window.service}/{window.metric}): {error}") from error
        results.append(_verdict(window, scored, policy.for_index(window.values.index)))
        by_service.setdefault(window.service, {})[window.metric] = window.values
        single_scores.setdefault(window.service, {})[window.metric] = pd.Series(
            scored.score, index=window.values.index)
    incidents = []
    for service, by_metric in by_service.items():
        detector = bundle.service_detectors.get(service)
        if detector is not None and len(by_metric) >= 2:
            index = next(iter(by_metric.values())).index
            aligned = {m: v.reindex(index) for m, v in by_metric.items()}
            singles = {m: v.reindex(index) for m, v in single_scores[service].items()}
            incidents.extend(_reported(incident) for incident in
                             service_incidents(service, aligned, singles, detector, policy))
    threshold = results[0].threshold if results else policy.threshold_at(0.0)
    return Scoring(threshold=threshold, results=results, service_incidents=incidents,
                   alerts=_alerts(windows, results, incidents, policy, generator_url))


def score_query(bundle: DetectorBundle, query: ScoreQuery,
                cache: ScoreCache | None = None) -> Scoring:
    """:func:`score_windows` of one query."""
    return score_windows(bundle, query.windows, query.policy, detectors=query.detectors,
                         generator_url=query.generator_url, cache=cache)


def _reported(incident: ServiceIncident) -> ServiceIncident:
    return dataclasses.replace(
        incident, start=incident.start.to_pydatetime(), end=incident.end.to_pydatetime(),
        peak_at=incident.peak_at.to_pydatetime(), peak_score=reported(incident.peak_score),
        expected_value=reported(incident.expected_value))


def _reason(value: float, low: float, high: float, detector_scores: dict[str, float]) -> str:
    loudest = max(detector_scores, key=detector_scores.get)
    if value > high:
        where = f"above the expected range [{low:.4g}, {high:.4g}]"
    elif value < low:
        where = f"below the expected range [{low:.4g}, {high:.4g}]"
    else:
        where = f"inside the expected range [{low:.4g}, {high:.4g}] but unusual"
    return f"value {value:.4g} is {where}; {loudest} scores {detector_scores[loudest]:.3f}"


def _verdict(window: Window, scored: SeriesScores, policy: AlarmPolicy) -> SeriesVerdict:
    stamps = window.values.index
    anomalies = []
    reasons = {}
    for i in scored.anomalous(policy.threshold):
        by_detector = {name: reported(s[i]) for name, s in scored.detector_scores.items()}
        value = float(scored.values[i])
        low, high = float(scored.expected_low[i]), float(scored.expected_high[i])
        reasons[int(i)] = _reason(value, low, high, by_detector)
        anomalies.append(AnomalousPoint(
            timestamp=stamps[i].to_pydatetime(), value=value, score=reported(scored.score[i]),
            expected_low=reported(low), expected_high=reported(high), detectors=by_detector,
            reason=reasons[int(i)]))
    incidents = [
        SeriesIncident(
            start=incident.start.to_pydatetime(),
            end=incident.end.to_pydatetime(),
            n_points=incident.n_points,
            peak_at=stamps[incident.peak_position].to_pydatetime(),
            peak_score=reported(incident.peak_score),
            peak_value=float(scored.values[incident.peak_position]),
            severity=incident.severity,
            reason=f"{incident.n_points} alarmed point(s) of {window.metric}; at the peak "
            + reasons[incident.peak_position],
        )
        for incident in find_incidents(scored.index, scored.score, window.metric, policy)
    ]
    # round() on Python floats: a tenth of the cost of numpy scalars, and the same digits.
    scores = [None if s != s else round(s, REPORTED_DECIMALS) for s in scored.score.tolist()]
    return SeriesVerdict(service=window.service, metric=window.metric,
                         known_series=scored.known_series, threshold=policy.threshold,
                         detectors=sorted(scored.detector_scores), scores=scores,
                         anomalies=anomalies, incidents=incidents)


def _alerts(windows: Sequence[Window], results: list[SeriesVerdict],
            incidents: list[ServiceIncident], policy: AlarmPolicy,
            generator_url: str) -> list[Alert]:
    quiet = policy.resolve_after_points
    out = []
    ends: dict[str, tuple[dt.datetime, dt.timedelta]] = {}
    for window, result in zip(windows, results, strict=True):
        stamps = window.values.index
        end = stamps[-1].to_pydatetime()
        step = (end - stamps[-2].to_pydatetime()) if len(stamps) > 1 else dt.timedelta(minutes=1)
        ends[window.service] = max(ends.get(window.service, (end, step)), (end, step))
        out.extend(series_alerts(result, end, step, quiet * step, generator_url))
    for incident in incidents:
        end, step = ends[incident.service]
        out.append(service_alerts(incident, end, step, quiet * step, generator_url))
    return out
