"""``aiops watch``: score live windows from Prometheus and keep Alertmanager up to date.

Every cycle (``interval_s`` of the live config, :mod:`serving.live`):

1. each configured series' last ``window_s`` is read from Prometheus on the
   ``step_s`` grid (a series Prometheus fails on is skipped this cycle and
   reported; the others go on);
2. the windows are scored with the served model, in one request as
   ``POST /v1/score`` would, which gives Alertmanager-shaped alerts;
3. Alertmanager hears only what changed: an alert firing for the first time is
   posted, one that stopped firing (resolved in the window, or gone from it) is
   posted once as resolved, and one still firing is re-posted only when its
   ``endsAt`` comes near (every ``2 × interval_s``), so that Alertmanager keeps
   it open but nothing is announced twice.

A firing alert is posted with ``endsAt`` four intervals ahead, as Prometheus
does: if the watcher stops, Alertmanager resolves its alerts by itself. The
state is in memory; a restarted watcher re-posts what is firing, and
Alertmanager, which identifies an alert by its labels, takes it as the same
alert, not a new one. A failed post is retried on the next cycle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable

import httpx
import pandas as pd

from features.prometheus import LabelRuleError, PrometheusImportError
from models.bundle import DetectorBundle
from serving.alerts import OPEN_END, Alert
from serving.live import LiveConfig
from serving.loader import ModelHolder
from serving.scoring import Window, score_windows
from serving.settings import Settings

_log = logging.getLogger(__name__)

ALERTS_PATH = "/api/v2/alerts"
#: A firing alert stays open this many intervals after it was last posted.
VALIDITY_INTERVALS = 4
#: ... and is re-posted once this many intervals have passed since.
RESEND_INTERVALS = 2


class AlertmanagerError(RuntimeError):
    """Alertmanager could not be reached or refused the alerts."""


@dataclasses.dataclass
class _Sent:
    alert: Alert
    posted_at: dt.datetime


@dataclasses.dataclass
class CycleReport:
    """What one cycle did."""

    at: dt.datetime
    scored: list[str]
    failed: dict[str, str]
    fired: list[str]
    resolved: list[str]
    kept_open: list[str]
    #: Fleet queries (``queries:`` of the live config) that failed this cycle, and why.
    failed_queries: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Range queries sent to Prometheus, and the cycle's duration up to the scoring's end.
    prometheus_queries: int = 0
    seconds: float = 0.0
    post_error: str | None = None

    def summary(self) -> str:
        text = (f"{self.at.isoformat()}: scored {len(self.scored)} series"
                f"{f', {len(self.failed)} failed' if self.failed else ''}"
                f"{f', {len(self.failed_queries)} queries failed' if self.failed_queries else ''}"
                f"; alerts: "
                f"{len(self.fired)} fired, {len(self.resolved)} resolved, "
                f"{len(self.kept_open)} kept open; {self.prometheus_queries} Prometheus "
                f"queries, {self.seconds:.1f} s")
        if self.post_error:
            text += f"; NOT POSTED, retried next cycle: {self.post_error}"
        return text


def post_alerts(url: str, alerts: list[Alert], *, timeout_s: float,
                client: httpx.Client | None = None) -> None:
    """POST ``alerts`` to Alertmanager's ``/api/v2/alerts``.

    Raises
    ------
    AlertmanagerError
        Alertmanager is unreachable, slow, or answered with an error status.
    """
    body = [{"labels": a.labels, "annotations": a.annotations,
             "startsAt": a.startsAt.isoformat(), "endsAt": a.endsAt.isoformat(),
             "generatorURL": a.generatorURL} for a in alerts]
    endpoint = url.rstrip("/") + ALERTS_PATH
    try:
        response = (client or httpx).post(endpoint, json=body, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise AlertmanagerError(f"cannot post to Alertmanager at {endpoint}: "
                                f"{type(error).__name__}: {error}") from None
    if response.status_code >= 300:
        raise AlertmanagerError(f"Alertmanager at {endpoint} answered HTTP "
                                f"{response.status_code}: {response.text[:300].strip()}")


class Watcher:
    """The watch loop's state: what Alertmanager was last told, per alert fingerprint."""

    def __init__(self, config: LiveConfig, holder: ModelHolder, settings: Settings, *,
                 alertmanager_url: str | None = None,
                 post: Callable[[list[Alert]], None] | None = None) -> None:
        if post is None:
            url = alertmanager_url or (config.alertmanager.url if config.alertmanager else None)
            if url is None:
                raise ValueError("no Alertmanager to post to: set alertmanager.url in the live "
                                 "config or pass --alertmanager (or --dry-run)")
            timeout = config.alertmanager.timeout_s if config.alertmanager else 10.0
            post = lambda alerts: post_alerts(url, alerts, timeout_s=timeout)  # noqa: E731
        if not config.series and not config.queries:
            raise ValueError("the live config lists no series to watch (series: [...] or "
                             "queries: [...])")
        self.config = config
        self.holder = holder
        self.settings = settings
        self.post = post
        self.open: dict[str, _Sent] = {}
        #: The series each fleet query gave when it was last read: if it fails, theirs.
        self._from_query: dict[int, set[tuple[str, str]]] = {}
        if holder.model is not None:
            misread = self._misread(holder.model.bundle)
            if misread:
                raise ValueError("; ".join(misread.values()))

    def _misread(self, bundle: DetectorBundle) -> dict[tuple[str, str], str]:
        """Why each watched series trained at another step than the config's cannot be read."""
        misread = {}
        for item in self.config.series:
            try:
                self.config.check_step(bundle, item.service, item.metric)
            except ValueError as error:
                misread[(item.service, item.metric)] = str(error)
        return misread

    def _windows(self, end: pd.Timestamp, client: httpx.Client, failed_queries: dict[str, str]
                 ) -> tuple[list[Window], dict[tuple[str, str], str]]:
        bundle = self.holder.require().bundle
        failed = self._misread(bundle)
        read: dict[tuple[str, str], pd.Series] = {}
        for item in self.config.series:
            key = (item.service, item.metric)
            if key in failed:
                _log.warning("skipping %s/%s: %s", *key, failed[key])
                continue
            try:
                read[key] = self.config.read(item.query, self.config.window_s, end=end,
                                             client=client)
            except PrometheusImportError as error:
                failed[key] = str(error)
                _log.warning("skipping %s/%s this cycle: %s", *key, error)
        for i, item in enumerate(self.config.queries):
            try:
                found = self.config.read_many(item, self.config.window_s, end=end,
                                              client=client)
            except (PrometheusImportError, LabelRuleError) as error:
                failed_queries[item.query] = str(error)
                for key in self._from_query.get(i, ()):
                    failed.setdefault(key, str(error))
                _log.warning("skipping the series of %r this cycle: %s", item.query, error)
                continue
            self._from_query[i] = set(found)
            for key, values in found.items():
                if key in read or key in failed:
                    failed.setdefault(key, f"{key[0]}/{key[1]} is also given by another query "
                                           f"of the live config; the first one is scored")
                    continue
                try:
                    self.config.check_step(bundle, *key)
                except ValueError as error:
                    failed[key] = str(error)
                    continue
                read[key] = values
        windows = []
        for key, values in read.items():
            if values.notna().sum() == 0:
                failed[key] = "no samples in the window"
                continue
            windows.append(Window(*key, values))
        return windows, failed

    def _generator_url(self) -> str:
        return self.config.prometheus.url.rstrip("/") + "/graph?" + urllib.parse.urlencode(
            {f"g{i}.expr": s.query for i, s in enumerate(self.config.series[:10])})

    def cycle(self, end: dt.datetime | None = None) -> CycleReport:
        """Read, score, and tell Alertmanager what changed.

        ``end`` is the windows' end (default now: a replay or a test may look at the
        past). Alertmanager's own times (``endsAt`` of a firing alert, when to re-post)
        always follow the wall clock, which is what Alertmanager judges them by.
        """
        started = time.monotonic()
        now = dt.datetime.now(dt.UTC)
        end = end or now
        requests, failed_queries = [], {}
        with httpx.Client(event_hooks={"request": [requests.append]}) as client:
            windows, failed = self._windows(pd.Timestamp(end), client, failed_queries)
        alerts: list[Alert] = []
        if windows:
            alerts = score_windows(self.holder.require().bundle, windows,
                                   self.settings.alarm_policy,
                                   generator_url=self._generator_url(),
                                   cache=self.holder.score_cache).alerts
        firing = {a.fingerprint: a for a in alerts if a.status == "firing"}
        resolved_in_window = {a.fingerprint: a for a in alerts if a.status == "resolved"}

        validity = dt.timedelta(seconds=VALIDITY_INTERVALS * self.config.interval_s)
        resend = dt.timedelta(seconds=RESEND_INTERVALS * self.config.interval_s)
        to_post: list[Alert] = []
        fired, kept, gone = [], [], []
        for fp, alert in firing.items():
            sent = self.open.get(fp)
            if sent is None or now - sent.posted_at >= resend:
                to_post.append(dataclasses.replace(alert, endsAt=now + validity))
                (fired if sent is None else kept).append(fp)
        for fp, sent in self.open.items():
            labels = sent.alert.labels
            # A series that could not be read this cycle keeps its alerts as they were.
            if fp in firing or (labels.get("service"), labels.get("metric")) in failed:
                continue
            ended = resolved_in_window.get(fp)
            ends = ended.endsAt if ended is not None and ended.endsAt != OPEN_END else now
            to_post.append(dataclasses.replace(sent.alert, status="resolved",
                                               endsAt=min(ends, now)))
            gone.append(fp)

        def names(fps: list[str]) -> list[str]:
            return [_name(firing[fp] if fp in firing else self.open[fp].alert) for fp in fps]

        report = CycleReport(at=end, scored=[f"{w.service}/{w.metric}" for w in windows],
                             failed={f"{k[0]}/{k[1]}": v for k, v in failed.items()},
                             fired=names(fired), resolved=names(gone),
                             kept_open=names(kept), failed_queries=failed_queries,
                             prometheus_queries=len(requests),
                             seconds=time.monotonic() - started)
        if to_post:
            try:
                self.post(to_post)
            except AlertmanagerError as error:
                report.post_error = str(error)
                _log.error("%s", error)
                return report
        for fp in fired + kept:
            self.open[fp] = _Sent(firing[fp], now)
        for fp in gone:
            del self.open[fp]
        return report

    def run(self, cycles: int | None = None, *,
            on_cycle: Callable[[CycleReport], None] | None = None,
            stop: threading.Event | None = None) -> list[CycleReport]:
        """Run ``cycles`` cycles (None: until ``stop`` is set), ``interval_s`` apart."""
        stop = stop or threading.Event()
        reports: list[CycleReport] = []
        while not stop.is_set() and (cycles is None or len(reports) < cycles):
            started = time.monotonic()
            reports.append(self.cycle())
            if on_cycle is not None:
                on_cycle(reports[-1])
            if cycles is None or len(reports) < cycles:
                stop.wait(max(0.0, self.config.interval_s - (time.monotonic() - started)))
        return reports


def _name(alert: Alert) -> str:
    labels = alert.labels
    return (f"{labels.get('alertname')} {labels.get('service')}/{labels.get('metric')} "
            f"{labels.get('severity')}")
