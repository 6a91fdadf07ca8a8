"""Import series from Prometheus' HTTP API (``/api/v1/query_range``) into the Parquet store.

What a run does, for every PromQL query it is given:

1. **Evaluation times.** Prometheus evaluates a range query at ``start``,
   ``start + step``, ... up to ``end`` (both inclusive). ``start`` is moved up
   to the next multiple of ``step`` since the Unix epoch, so that every run
   (and every resumed run) lands on the same grid of timestamps.
2. **Chunks.** Prometheus refuses a range query of more than 11,000 points per
   series, so the range is cut into chunks of at most
   :data:`MAX_POINTS_PER_REQUEST` evaluation times each; the next chunk starts
   one step after the previous one ends, so no time is asked for twice.
3. **Labels to columns** by a :class:`LabelRule`: ``service`` is the value of
   the first label of ``service_labels`` that the series carries (default
   ``service``, then ``job``, then ``app``); ``metric`` is the query's own name
   when it was given one (``"cpu=rate(node_cpu_seconds_total[1m])"``), else the
   value of ``metric_label`` (default ``__name__``, which expressions such as
   ``rate(...)`` drop: name those queries). The other labels are dropped, or
   kept in the store's optional ``labels`` map column with ``keep_labels``.
   A series without a service or a metric, or two series that land on the
   same ``service``/``metric``, are a :class:`LabelRuleError` naming the query
   and the labels, with advice from the labels seen: the labels that differ,
   ``sum by (<the label that named the service>) (...)``, a matcher, or a rule
   whose ``service_labels`` tell the series apart.
4. **Values.** Prometheus sends values as text. ``"NaN"`` is stored as NaN,
   which is the store's gap marker (:mod:`features.validation`); nothing
   becomes a zero. The store would take ``±Inf``, but no detector or
   forecaster does (``models.base.check_series`` refuses them), so by default
   (``on_infinite="gap"``) an infinite value is stored as a gap too, counted
   per series in the report and logged as a warning; ``on_infinite="error"``
   refuses the import instead.
5. **Resume.** Each series keeps only the points after its last timestamp
   already in the store (read from the store's newest day partition of that
   service/metric); the points at or before it are counted as skipped, so a
   second run over the same range writes nothing, and a run with a later end
   appends only the new points.
6. **All or nothing.** Every chunk of every query is fetched and checked into
   memory first; the store is written once, at the end, through
   :func:`features.store.write_dataset` (which validates the rows). Any HTTP
   error, Prometheus error answer (``{"status": "error", "errorType": ...,
   "error": ...}``), timeout, refused connection or partial answer (an answer
   carrying ``warnings``) raises :class:`PrometheusImportError`, naming the
   URL, the query, the chunk's time range and Prometheus' own message, and the
   store is left as it was.

Step 3's label rule is :mod:`features.prometheus_labels` (re-exported here). The
rest stays in this one module: fetching, chunking, resume and the report are the
steps of one all-or-nothing import, and read best in order.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd

# The label rule lives in its own module; its public names stay importable from here.
from features.prometheus_labels import (
    DEFAULT_SERVICE_LABELS as DEFAULT_SERVICE_LABELS,
)
from features.prometheus_labels import LabelRule, LabelRuleError, PromQuery, _labels_text
from features.schema import LABELS, METRIC, SERVICE, TIMESTAMP, VALUE
from features.series import duration_text
from features.timeparse import parse_seconds, parse_timestamp

_log = logging.getLogger(__name__)

#: Prometheus refuses a range query whose (end - start) / step exceeds 11,000.
MAX_POINTS_PER_REQUEST = 11_000
#: A guard against a range and step that would take days to fetch (110 million points).
MAX_REQUESTS_PER_QUERY = 10_000
QUERY_RANGE_PATH = "/api/v1/query_range"



class PrometheusImportError(RuntimeError):
    """Prometheus could not be asked or did not answer in full; nothing was written.

    Attributes name where it happened: ``url``, ``query``, ``start`` and
    ``end`` of the chunk (UTC), the HTTP ``status_code`` and Prometheus'
    ``error_type`` and ``prometheus_error`` when it sent them.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        query: str | None = None,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
        prometheus_error: str | None = None,
    ) -> None:
        self.url = url
        self.query = query
        self.start = start
        self.end = end
        self.status_code = status_code
        self.error_type = error_type
        self.prometheus_error = prometheus_error
        where = f"Prometheus at {url}"
        if query is not None:
            where += f", query {query!r}"
        if start is not None and end is not None:
            where += f", chunk {_iso(start)} to {_iso(end)}"
        super().__init__(f"{where}: {message}; nothing was written")


@dataclasses.dataclass(frozen=True)
class SeriesImport:
    """What one series brought: points fetched, written, skipped as already stored."""

    query: str
    service: str
    metric: str
    labels: dict[str, str]
    n_fetched: int
    n_written: int
    #: Points at or before the last timestamp already stored for the series.
    n_skipped: int
    #: Written points that are gaps because Prometheus sent NaN.
    n_nan: int
    #: Written points that are gaps because Prometheus sent +Inf or -Inf.
    n_infinite: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    #: The series' last stored timestamp before this run (None: new series).
    resumed_after: pd.Timestamp | None
    #: How often the values really change when the step is finer than the data's own
    #: sampling (each value repeated over several steps, see :func:`sampling_interval_s`).
    sampled_every_s: float | None = None


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """The outcome of :func:`import_prometheus`."""

    url: str
    root: Path
    start: pd.Timestamp
    end: pd.Timestamp
    step_s: float
    n_requests: int
    series: tuple[SeriesImport, ...]
    #: Queries that returned no series at all.
    empty_queries: tuple[str, ...] = ()

    @property
    def n_written(self) -> int:
        return sum(s.n_written for s in self.series)

    @property
    def n_skipped(self) -> int:
        return sum(s.n_skipped for s in self.series)

    @property
    def n_infinite(self) -> int:
        return sum(s.n_infinite for s in self.series)

    def summary(self) -> list[str]:
        """Lines for a person: one per series, then the totals."""
        lines = []
        for s in self.series:
            span = (f"{_iso(s.first)} to {_iso(s.last)}" if s.first is not None
                    else "nothing new")
            extra = []
            if s.n_nan:
                extra.append(f"{s.n_nan} NaN as gaps")
            if s.n_infinite:
                extra.append(f"{s.n_infinite} infinite as gaps")
            skipped = (f"{s.n_skipped} skipped (not after the last stored point "
                       f"{_iso(s.resumed_after)})" if s.resumed_after is not None
                       else "new series")
            lines.append(f"{s.service}/{s.metric}: {s.n_written} rows written, {skipped}, {span}"
                         + (f" ({', '.join(extra)})" if extra else ""))
        for s in self.series:
            if s.sampled_every_s is not None:
                lines.append(f"warning: {repeated_values_text(s, self.step_s)}")
        for query in self.empty_queries:
            lines.append(f"warning: query {query!r} returned no series")
        lines.append(f"imported {self.n_written} rows of {len(self.series)} series from "
                     f"{self.url} ({_iso(self.start)} to {_iso(self.end)}, step "
                     f"{self.step_s:g}s, {self.n_requests} request{'' if self.n_requests == 1 else 's'}) "
                     f"into {self.root}; "
                     f"{self.n_skipped} skipped as already stored")
        return lines


def repeated_values_text(series: SeriesImport, step_s: float) -> str:
    """What a person is told about a series fetched at a step finer than its sampling."""
    every = duration_text(series.sampled_every_s)
    return (f"{series.service}/{series.metric}: each value repeats about "
            f"{round(series.sampled_every_s / step_s)} times, so the data looks sampled every "
            f"{every}, finer than the step {step_s:g}s: import with --step {every}")


#: Fewest runs of repeated values, between two changes, that can show a sampling cadence.
_MIN_RUNS = 10
#: Share of those runs whose length is the cadence (rounded down or up) for it to be even.
_EVEN_SHARE = 0.9


def sampling_interval_s(stamps_ms: np.ndarray, values: np.ndarray, step_ms: int) -> float | None:
    """How often the values change, when a step finer than the data's sampling repeats them.

    Prometheus answers every evaluation time with the last sample before it, so at a step
    of 15 s over samples taken every minute each value comes four times in a row. That
    is told from values that merely repeat (a constant, a gauge that changes seldom, small
    integers repeating by chance) by the cadence: at least ``_MIN_RUNS`` runs between two
    changes, two steps long or more on average, and ``_EVEN_SHARE`` of them as long as that
    average rounded down or up. The first and last runs, cut by the range, do not count;
    gaps and missing steps end a run. None when the values show no such cadence.
    """
    if len(values) < 2:
        return None
    observed = np.isfinite(values)
    breaks = ((values[1:] != values[:-1]) | ~observed[1:] | ~observed[:-1]
              | (np.diff(stamps_ms) != step_ms))
    starts = np.flatnonzero(np.r_[True, breaks])
    lengths = np.diff(np.r_[starts, len(values)])[observed[starts]][1:-1]
    if lengths.size < _MIN_RUNS:
        return None
    mean = float(lengths.mean())
    if mean < 2:
        return None
    if np.isin(lengths, (math.floor(mean), math.ceil(mean))).mean() < _EVEN_SHARE:
        return None
    seconds = mean * step_ms / 1000
    return float(round(seconds)) if seconds >= 1 else round(seconds, 3)


# -- parsing of user input ------------------------------------------------------------------
def parse_step(text: str | float | int) -> float:
    """A query_range step in seconds: any :func:`features.timeparse.parse_seconds` spelling.

    Only the floor is Prometheus' own: it takes steps in whole milliseconds.
    """
    seconds = parse_seconds(text, name="step")
    if seconds < 0.001:
        raise ValueError(f"step {text!r} must be at least 1 ms")
    return seconds


def chunk_ranges(start_ms: int, end_ms: int, step_ms: int,
                 max_points: int = MAX_POINTS_PER_REQUEST) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` in ms, each holding at most ``max_points`` evaluation times.

    Both ends are inclusive, as in Prometheus; chunk ``i + 1`` starts one step
    after chunk ``i`` ends.
    """
    if step_ms <= 0 or max_points < 1:
        raise ValueError(f"step_ms={step_ms} and max_points={max_points} must be positive")
    chunks = []
    start = start_ms
    while start <= end_ms:
        chunks.append((start, min(start + (max_points - 1) * step_ms, end_ms)))
        start += max_points * step_ms
    return chunks


# -- the store ------------------------------------------------------------------------------
def last_stored(root: str | Path, service: str, metric: str) -> pd.Timestamp | None:
    """The last timestamp stored for ``service``/``metric`` under ``root`` (None: none)."""
    from features.store import iter_files, read_dataset

    if not Path(root).is_dir():
        return None
    dates = []
    for path in iter_files(root, service=service, metric=metric):
        found = re.search(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)", path)
        if found:
            dates.append(found.group(1))
    if not dates:
        return None
    # Only the newest day partition can hold the last timestamp.
    rows = read_dataset(root, service=service, metric=metric, start=f"{max(dates)}T00:00Z")
    return None if rows.empty else rows[TIMESTAMP].max()


# -- Prometheus -----------------------------------------------------------------------------
def fetch_range(
    client: httpx.Client,
    url: str,
    query: str,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    *,
    timeout_s: float,
) -> list[dict[str, Any]]:
    """One ``query_range`` call: the ``result`` list of a matrix answer.

    Raises
    ------
    PrometheusImportError
        On any transport failure, non-2xx answer, error status or warnings.
    """
    def fail(message: str, **details: Any) -> PrometheusImportError:
        return PrometheusImportError(message, url=url, query=query, start=_stamp(start_ms),
                                     end=_stamp(end_ms), **details)

    form = {"query": query, "start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}",
            "step": f"{step_ms / 1000:g}",
            # Plain seconds: Prometheus refuses a fractional duration such as "0.5s".
            "timeout": f"{timeout_s:g}"}
    endpoint = url.rstrip("/") + QUERY_RANGE_PATH
    try:
        response = client.post(endpoint, data=form, timeout=timeout_s)
    except httpx.TimeoutException:
        raise fail(f"no answer within the timeout of {timeout_s:g} s") from None
    except httpx.ConnectError as error:
        raise fail(f"cannot connect ({error})") from None
    except httpx.HTTPError as error:
        raise fail(f"the request failed ({type(error).__name__}: {error})") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        snippet = response.text[:200].strip() or "an empty body"
        raise fail(f"HTTP {response.status_code} with no Prometheus JSON answer: {snippet!r}",
                   status_code=response.status_code)
    if response.status_code >= 400 or body.get("status") != "success":
        error_type, text = body.get("errorType"), body.get("error")
        raise fail(f"HTTP {response.status_code}, {error_type or 'error'}: "
                   f"{text or 'no error text'}", status_code=response.status_code,
                   error_type=error_type, prometheus_error=text)
    if body.get("warnings"):
        raise fail(f"a partial answer, Prometheus warned: {'; '.join(map(str, body['warnings']))}",
                   status_code=response.status_code)
    data = body.get("data") or {}
    if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise fail(f"expected a range vector (resultType matrix), got "
                   f"{data.get('resultType')!r}", status_code=response.status_code)
    return data["result"]


#: A point of a live window whose range selectors (``x[5m]``) hold fewer than this share of
#: their usual samples is not a real value: a scrape gap makes ``rate(x[5m])`` dip.
MIN_RANGE_COVERAGE = 0.9
#: A range-vector selector: a metric name and/or label matchers, then a range in brackets (a
#: subquery, ``[1h:1m]``, is not one); an ``offset`` after it belongs to it.
_RANGE_SELECTOR = re.compile(
    r"(?P<selector>(?:[a-zA-Z_:][a-zA-Z0-9_:]*\s*)?\{[^{}]*\}|[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"\s*\[\s*(?P<range>[0-9][0-9a-zA-Z.]*)\s*\](?P<offset>\s+offset\s+-?[0-9][0-9a-zA-Z.]*)?"
)


def range_selectors(query: str) -> list[str]:
    """The range-vector selectors of a PromQL expression, such as ``x{job="a"}[5m]``."""
    return list(dict.fromkeys(
        f"{m['selector'].strip()}[{m['range']}]{m['offset'] or ''}"
        for m in _RANGE_SELECTOR.finditer(query)
    ))


def fetch_window(
    url: str,
    query: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    step_s: float,
    *,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
) -> pd.Series:
    """One query's single series over ``[start, end]`` on a ``step_s`` grid, for live scoring.

    Nothing is stored. Evaluation times where Prometheus has no sample (it
    leaves them out) and infinite values are NaN, so the result is a regular
    grid with gaps marked, as the detectors expect.

    A point computed over a range that missed scrapes is NaN too: for each
    range selector of the query (``rate(x[5m])`` reads ``x[5m]``), Prometheus
    counts the samples in the range at every point, over all the series it selects
    (``sum(count_over_time(x[5m]))``: a pod replaced by another keeps the sum), and
    a point whose count falls below ``MIN_RANGE_COVERAGE`` of the window's median
    count is a scrape gap's after-effect (a rate over a range that holds a 100 s
    gap dips by a third), not a value to score.

    Raises
    ------
    PrometheusImportError
        Prometheus failed, or the query gave no series or several (aggregate it
        with ``sum``/``avg`` to one).
    """
    own_client = client is None
    client = client or httpx.Client()
    try:
        window = _fetch_one(client, url, query, start, end, step_s, timeout_s=timeout_s)
        for selector in range_selectors(query):
            counts = _fetch_one(client, url, f"sum(count_over_time({selector}))", start, end,
                                step_s, timeout_s=timeout_s, empty_ok=True)
            _mark_scrape_gaps(window, counts, query, selector)
    finally:
        if own_client:
            client.close()
    return window


def fetch_windows(
    url: str,
    query: PromQuery,
    rule: LabelRule,
    start: pd.Timestamp,
    end: pd.Timestamp,
    step_s: float,
    *,
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
) -> dict[tuple[str, str], pd.Series]:
    """Every series of one query over ``[start, end]`` on a ``step_s`` grid, by service/metric.

    The fleet form of :func:`fetch_window`: one query (``up{job=~".+"}``, or
    ``cpu=rate(process_cpu_seconds_total[5m])``) gives many series, each named by
    ``rule`` as the importer names them (:class:`LabelRule`). Gaps and infinite values
    are NaN. The scrape-gap check of :func:`fetch_window` runs per series, with one
    ``count_over_time`` query per range selector: a series is checked against the count
    series with its labels (those of an unaggregated query); an aggregated query's
    series have none, and are not checked.

    Raises
    ------
    PrometheusImportError
        Prometheus failed.
    LabelRuleError
        A series' labels give no service or metric, or two series give the same pair.
    """
    own_client = client is None
    client = client or httpx.Client()
    try:
        _, found = _fetch_all(client, url, query.expr, start, end, step_s, timeout_s=timeout_s)
        named: dict[tuple[str, str], pd.Series] = {}
        seen: dict[tuple[str, str], dict[str, str]] = {}
        for labels, window in found:
            service, metric, _ = rule.identify(labels, query)
            if (service, metric) in seen:
                raise LabelRuleError(
                    f"query {query.text!r}: series {_labels_text(seen[service, metric])} and "
                    f"{_labels_text(labels)} both give {service}/{metric}; "
                    f"{rule.collision_advice(seen[service, metric], labels, query)}")
            seen[service, metric], named[service, metric] = labels, window
        for selector in range_selectors(query.expr):
            _, listed = _fetch_all(client, url, f"count_over_time({selector})", start, end,
                                   step_s, timeout_s=timeout_s)
            counts = {_labels_text(_unnamed(labels)): window for labels, window in listed}
            for key, labels in seen.items():
                count = counts.get(_labels_text(_unnamed(labels)))
                if count is not None:
                    _mark_scrape_gaps(named[key], count, f"{key[0]}/{key[1]}", selector)
    finally:
        if own_client:
            client.close()
    return named


def _unnamed(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "__name__"}


def _mark_scrape_gaps(window: pd.Series, counts: pd.Series, what: str, selector: str) -> None:
    """NaN where ``selector`` held fewer than ``MIN_RANGE_COVERAGE`` of its usual samples."""
    usual = float(np.nanmedian(counts)) if counts.notna().any() else math.nan
    short = (counts < MIN_RANGE_COVERAGE * usual).to_numpy() & window.notna().to_numpy()
    if short.any():
        _log.info("%s: %d of %d points not scored: %s held fewer than %.0f%% of its "
                  "usual %g samples there (a scrape gap)", what, int(short.sum()),
                  len(window), selector, 100 * MIN_RANGE_COVERAGE, usual)
        window[short] = np.nan


def _fetch_all(client: httpx.Client, url: str, query: str, start: pd.Timestamp,
               end: pd.Timestamp, step_s: float, *, timeout_s: float
               ) -> tuple[pd.DatetimeIndex, list[tuple[dict[str, str], pd.Series]]]:
    """The grid, and every series of ``query`` on it: its labels and values (NaN where none)."""
    step_ms = round(step_s * 1000)
    start_ms = -(-_ms(start) // step_ms) * step_ms
    end_ms = _ms(end)
    found: dict[str, tuple[dict[str, str], list[np.ndarray], list[np.ndarray]]] = {}
    for chunk_start, chunk_end in chunk_ranges(start_ms, end_ms, step_ms):
        for item in fetch_range(client, url, query, chunk_start, chunk_end, step_ms,
                                timeout_s=timeout_s):
            try:
                labels, stamps, values = _series_points(item)
            except ValueError as error:
                raise PrometheusImportError(str(error), url=url, query=query) from None
            entry = found.setdefault(_labels_text(labels), (labels, [], []))
            entry[1].append(stamps)
            entry[2].append(values)
    n = (end_ms - start_ms) // step_ms + 1 if end_ms >= start_ms else 0
    index = pd.date_range(_stamp(start_ms), periods=n, freq=f"{step_ms}ms").as_unit("ns")
    out = []
    for labels, stamps, values in found.values():
        at = (np.concatenate(stamps) - start_ms) // step_ms
        got = np.concatenate(values)
        column = np.full(n, np.nan)
        inside = (at >= 0) & (at < n)
        column[at[inside]] = np.where(np.isfinite(got[inside]), got[inside], np.nan)
        out.append((labels, pd.Series(column, index=index)))
    return index, out


def _fetch_one(client: httpx.Client, url: str, query: str, start: pd.Timestamp,
               end: pd.Timestamp, step_s: float, *, timeout_s: float,
               empty_ok: bool = False) -> pd.Series:
    """The one series of ``query`` on the grid (all NaN for none, with ``empty_ok``)."""
    grid, found = _fetch_all(client, url, query, start, end, step_s, timeout_s=timeout_s)
    if len(found) != 1 and not (empty_ok and not found):
        series = sorted(_labels_text(labels) for labels, _ in found)
        what = "no series" if not found else f"{len(found)} series: {series[:5]}"
        step_ms = round(step_s * 1000)
        raise PrometheusImportError(f"expected one series, got {what}; aggregate the query "
                                    f"(sum/avg) to one", url=url, query=query,
                                    start=_stamp(-(-_ms(start) // step_ms) * step_ms),
                                    end=_stamp(_ms(end)))
    return found[0][1] if found else pd.Series(np.nan, index=grid)


def _series_points(item: Mapping[str, Any]) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    labels = dict(item.get("metric") or {})
    if "values" not in item:
        kind = "native histograms" if "histograms" in item else f"keys {sorted(item)}"
        raise ValueError(f"series {_labels_text(labels)} holds {kind}, not float samples; "
                         f"query a float expression such as histogram_quantile(...)")
    pairs = item["values"]
    stamps = np.fromiter((round(float(t) * 1000) for t, _ in pairs), dtype=np.int64,
                         count=len(pairs))
    # float() reads Prometheus' "NaN", "+Inf" and "-Inf".
    values = np.fromiter((float(v) for _, v in pairs), dtype=np.float64, count=len(pairs))
    return labels, stamps, values


@dataclasses.dataclass
class _Collected:
    query: PromQuery
    labels: dict[str, str]
    service: str
    metric: str
    #: The labels kept in the ``labels`` column; None when the rule drops them.
    other: dict[str, str] | None
    stamps: list[np.ndarray] = dataclasses.field(default_factory=list)
    values: list[np.ndarray] = dataclasses.field(default_factory=list)


def import_prometheus(
    url: str,
    queries: Sequence[PromQuery | str],
    root: str | Path,
    *,
    start: str | float | pd.Timestamp,
    end: str | float | pd.Timestamp | None = None,
    step: str | float,
    rule: LabelRule | None = None,
    timeout_s: float = 30.0,
    on_infinite: Literal["gap", "error"] = "gap",
    max_points: int = MAX_POINTS_PER_REQUEST,
    client: httpx.Client | None = None,
) -> ImportReport:
    """Fetch ``queries`` over ``[start, end]`` at ``step`` and append the new points under ``root``.

    See the module docstring for the label rule, chunking, resume and values.

    Parameters
    ----------
    url
        Prometheus' base URL, e.g. ``http://prometheus:9090`` (a path prefix is kept).
    queries
        :class:`PromQuery` objects or text, ``"PROMQL"`` or ``"NAME=PROMQL"``.
    start, end
        RFC 3339 text, Unix seconds, aware timestamps or times relative to now
        (``"-1h"``, ``"now-1h"``, see :mod:`features.timeparse`); ``end`` defaults to now.
    step
        The resolution: ``"10s"``, ``"1m"``, ``"1m30s"`` or seconds (:func:`parse_step`).
    client
        An ``httpx.Client`` to send the requests with (default: a new one).

    Raises
    ------
    PrometheusImportError
        A request failed or Prometheus answered with an error or a warning.
    LabelRuleError
        A series cannot be mapped to a service and a metric, or two collide.
    ValueError
        Bad arguments; an infinite value with ``on_infinite="error"``.
    """
    from features.store import write_dataset, writers_lock

    rule = rule or LabelRule()
    parsed = [q if isinstance(q, PromQuery) else PromQuery.parse(q) for q in queries]
    if not parsed:
        raise ValueError("no query given; pass at least one PromQL query")
    if on_infinite not in ("gap", "error"):
        raise ValueError(f"on_infinite must be 'gap' or 'error', got {on_infinite!r}")
    if not (isinstance(timeout_s, int | float) and timeout_s > 0):
        raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
    step_ms = round(parse_step(step) * 1000)
    now = pd.Timestamp.now(tz="UTC")  # one "now" for a relative start and end
    start_ts = parse_timestamp(start, name="start", now=now)
    end_ts = parse_timestamp("now" if end is None else end, name="end", now=now)
    start_ms = _ms(start_ts)
    start_ms = -(-start_ms // step_ms) * step_ms  # up to the step grid
    end_ms = _ms(end_ts)
    if start_ms > end_ms:
        raise ValueError(f"start {_iso(start_ts)} is after end {_iso(end_ts)} (or no multiple of "
                         f"the step {step_ms / 1000:g}s lies between them)")
    n_points = (end_ms - start_ms) // step_ms + 1
    if n_points > MAX_REQUESTS_PER_QUERY * max_points:
        raise ValueError(f"{_iso(start_ts)} to {_iso(end_ts)} at a step of {step_ms / 1000:g}s is "
                         f"{n_points:,} points per series, more than {MAX_REQUESTS_PER_QUERY:,} "
                         f"requests of {max_points:,}; shorten the range or raise the step")
    chunks = chunk_ranges(start_ms, end_ms, step_ms, max_points)

    own_client = client is None
    client = client or httpx.Client()
    collected: dict[tuple[str, str], _Collected] = {}
    empty: list[str] = []
    n_requests = 0
    started = time.perf_counter()
    try:
        for query in parsed:
            seen_any = False
            for chunk_start, chunk_end in chunks:
                result = fetch_range(client, url, query.expr, chunk_start, chunk_end, step_ms,
                                     timeout_s=timeout_s)
                n_requests += 1
                for item in result:
                    seen_any = True
                    _add_series(collected, item, query, rule)
                _log.info("%s: %s to %s, %d series", query.text, _iso(_stamp(chunk_start)),
                          _iso(_stamp(chunk_end)), len(result))
            if not seen_any:
                _log.warning("query %r returned no series between %s and %s", query.text,
                             _iso(_stamp(start_ms)), _iso(_stamp(end_ms)))
                empty.append(query.text)
    finally:
        if own_client:
            client.close()

    frames, reports = [], []
    # One writer at a time from reading the last stored points to appending after them, so
    # two imports into one store never both append the same rows.
    with writers_lock(root):
        for got in collected.values():
            frame, report = _new_rows(root, got, on_infinite, step_ms)
            reports.append(report)
            if not frame.empty:
                frames.append(frame)
        if frames:
            write_dataset(pd.concat(frames, ignore_index=True), root, existing="append")
    report = ImportReport(url=url, root=Path(root), start=_stamp(start_ms), end=_stamp(end_ms),
                          step_s=step_ms / 1000, n_requests=n_requests,
                          series=tuple(sorted(reports, key=lambda r: (r.service, r.metric))),
                          empty_queries=tuple(empty))
    _log.info("imported %d rows of %d series in %.1f s (%d requests)", report.n_written,
              len(report.series), time.perf_counter() - started, n_requests)
    return report


def _add_series(collected: dict[tuple[str, str], _Collected], item: Mapping[str, Any],
                query: PromQuery, rule: LabelRule) -> None:
    try:
        labels, stamps, values = _series_points(item)
    except ValueError as error:
        raise LabelRuleError(f"query {query.text!r}: {error}") from None
    service, metric, other = rule.identify(labels, query)
    key = (service, metric)
    got = collected.get(key)
    if got is None:
        got = collected[key] = _Collected(query, labels, service, metric,
                                          other if rule.keep_labels else None)
    elif got.labels != labels or got.query != query:
        advice = (rule.collision_advice(got.labels, labels, query) if got.query == query
                  else "name the queries apart (NAME=PROMQL) or change the label rule")
        raise LabelRuleError(
            f"two series land on {service}/{metric}: {_labels_text(got.labels)} of query "
            f"{got.query.text!r} and {_labels_text(labels)} of query {query.text!r}; {advice}")
    got.stamps.append(stamps)
    got.values.append(values)


def _new_rows(root: str | Path, got: _Collected, on_infinite: Literal["gap", "error"],
              step_ms: int) -> tuple[pd.DataFrame, SeriesImport]:
    stamps = np.concatenate(got.stamps) if got.stamps else np.array([], dtype=np.int64)
    values = np.concatenate(got.values) if got.values else np.array([], dtype=np.float64)
    order = np.argsort(stamps, kind="stable")
    stamps, values = stamps[order], values[order]
    previous = last_stored(root, got.service, got.metric)
    keep = np.ones(len(stamps), dtype=bool) if previous is None else stamps > _ms(previous)
    n_skipped = int((~keep).sum())
    sampled_every_s = sampling_interval_s(stamps, values, step_ms)
    stamps, values = stamps[keep], values[keep]
    infinite = np.isinf(values)
    if infinite.any():
        where = _iso(_stamp(int(stamps[np.flatnonzero(infinite)[0]])))
        if on_infinite == "error":
            raise ValueError(f"query {got.query.text!r}: series {got.service}/{got.metric} has "
                             f"{int(infinite.sum())} infinite value(s), the first at {where}; "
                             f"models refuse infinities (on_infinite='gap' stores them as gaps)")
        _log.warning("%s/%s: %d infinite value(s) stored as gaps (NaN), the first at %s",
                     got.service, got.metric, int(infinite.sum()), where)
        values = np.where(infinite, np.nan, values)
    frame = pd.DataFrame({
        TIMESTAMP: pd.to_datetime(stamps, unit="ms", utc=True).astype("datetime64[ns, UTC]"),
        SERVICE: got.service,
        METRIC: got.metric,
        VALUE: values,
    })
    if got.other is not None and len(frame):
        frame[LABELS] = [dict(got.other)] * len(frame)
    report = SeriesImport(
        query=got.query.text, service=got.service, metric=got.metric, labels=got.labels,
        n_fetched=len(keep), n_written=len(frame), n_skipped=n_skipped,
        n_nan=int(np.isnan(values).sum() - infinite.sum()), n_infinite=int(infinite.sum()),
        first=frame[TIMESTAMP].iloc[0] if len(frame) else None,
        last=frame[TIMESTAMP].iloc[-1] if len(frame) else None,
        resumed_after=previous, sampled_every_s=sampled_every_s)
    if sampled_every_s is not None:
        _log.warning("%s", repeated_values_text(report, step_ms / 1000))
    return frame, report


def _ms(stamp: pd.Timestamp) -> int:
    return stamp.value // 1_000_000


def _stamp(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def _iso(stamp: pd.Timestamp | None) -> str:
    if stamp is None:
        return "-"
    text = stamp.tz_convert("UTC").isoformat(timespec="milliseconds")
    return text.replace(".000+00:00", "Z").replace("+00:00", "Z")

