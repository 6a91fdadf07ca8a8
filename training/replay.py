"""``aiops detect``: offline, causal replay of a series for evaluation.

Each series is fitted on its first ``train_fraction`` of rows and refitted
every day on every row before that day (as the nightly retraining job does;
``retrain_every`` changes the period, ``None`` fits once); every row
is scored as a stream would score it: a row's score depends on that row and
the rows before it only. The scores of the training rows are produced the
same way (by the model fitted on them), so the output has one score per input
row; evaluation tools such as NAB ignore the probationary part.

A CSV file is a stream in the order of its rows, as real ones come:

* a row repeating the timestamp of an earlier row (a clock that stepped back an
  hour repeats an hour of timestamps) carries the score of the first row at
  that timestamp; its value is not scored a second time;
* a row whose timestamp is earlier than a row before it, and new, came late: a
  stream has already scored what came after it, so it gets no score (an empty
  cell) and changes no other score;
* gaps, irregular or changing steps and a start at any time of day are scored as
  they come (each detector reads a gap as missing values, not as zeros); a constant
  stretch is scored as values like any others (a stuck value pages at most where it
  leaves the expected range, not for its length).

The counts of repeated and late rows are logged and returned. With a policy, a
``page`` column marks the rows at which it would page
(:meth:`models.alarms.AlarmPolicy.pages`): the instant a pager rings, once per
incident, each row at the policy's threshold for the median step of the rows up to it
(the service takes each window's: the same for a series that keeps its step). The first
fit's training rows never page: the service had not scored them live.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from features.csv_files import read_csv_text, value_frame
from features.schema import IS_ANOMALY, TIMESTAMP, VALUE
from features.series import split_series, to_series
from features.store import read_dataset
from features.timeparse import parse_timestamps
from features.validation import parse_values
from models.alarms import AlarmPolicy, page_positions, unlearnt_rows
from models.bundle import DEFAULT_DETECTORS, combine, fit_series

_log = logging.getLogger(__name__)

MIN_TRAIN_POINTS = 10
#: The rows over which ``--pages`` takes a row's median step: an hour at 10 s, a day at 5 min.
PAGE_STEP_POINTS = 360
#: ``aiops detect`` refits daily by default, as the nightly retraining job does in production.
DEFAULT_RETRAIN_EVERY = pd.Timedelta(days=1)


def score_series(
    series: pd.Series,
    detector_names: tuple[str, ...] = DEFAULT_DETECTORS,
    train_fraction: float = 0.15,
    retrain_every: pd.Timedelta | None = None,
    jobs: int = 1,
    policy: AlarmPolicy | None = None,
) -> pd.Series:
    """Fit on the first ``train_fraction`` of ``series`` and score every point causally.

    With ``retrain_every``, the replay refits the way the nightly job does in
    production: at every multiple of ``retrain_every`` (since the epoch: each
    midnight UTC for a day) after the first fit, the detectors are fitted
    again on every row before that instant, and the
    new models score the rows up to the next refit. Scores stay causal: a
    row is scored by a model fitted on earlier rows only.

    A refit leaves out the rows of an incident still being paged at its instant, as the
    nightly job does (:func:`models.alarms.unlearnt_rows` under ``policy``, default the
    default policy), so it depends on the scores before it. The fits run first as if no
    incident were open, in ``jobs`` forked processes when ``jobs`` > 1; then, in order,
    each refit that had an open incident is fitted again without its rows (the scores
    are the same whatever ``jobs``).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction={train_fraction} must lie in (0, 1)")
    if retrain_every is not None and retrain_every <= pd.Timedelta(0):
        raise ValueError(f"retrain_every={retrain_every} must be positive")
    n_train = training_rows(len(series), train_fraction)
    if n_train >= len(series):
        raise ValueError(
            f"series has {len(series)} points; need more than {MIN_TRAIN_POINTS} to fit and score"
        )
    if jobs < 1:
        raise ValueError(f"jobs={jobs} must be at least 1")
    # The first model also scores its own training rows (NAB ignores them as probation).
    tasks = [(series, detector_names, start, end, 0 if start == n_train else start, slice(0, 0))
             for start, end in _segments(series.index, n_train, retrain_every)]
    if jobs > 1 and len(tasks) > 1:
        # Forked workers inherit the imports; the fits run in them, never in this process;
        # the longest fits (the latest refits) go first.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=context) as pool:
            segments = list(pool.map(_score_segment, tasks[::-1]))[::-1]
    else:
        segments = [_score_segment(task) for task in tasks]
    combined = np.full(len(series), np.nan)
    combined[:tasks[0][3]] = segments[0]
    policy = policy or AlarmPolicy()
    stamps = series.index.as_unit("ns").asi8
    thresholds = row_thresholds(stamps, policy)
    period = retrain_every.value if retrain_every is not None else 0
    for task, segment in zip(tasks[1:], segments[1:], strict=True):
        start, end = task[2], task[3]
        # The live scores so far: the first fit's training rows were not scored live.
        live = np.where(np.arange(start) < n_train, np.nan, combined[:start])
        unlearnt = unlearnt_rows(stamps[:start], live, thresholds[:start], policy,
                                 stamps[start] // period * period)
        if unlearnt.stop > unlearnt.start:
            segment = _score_segment((*task[:5], unlearnt))
        combined[start:end] = segment
    return pd.Series(combined, index=series.index, name="anomaly_score")


def _score_segment(task: tuple[pd.Series, tuple[str, ...], int, int, int, slice]) -> np.ndarray:
    """Fit on ``series[:start]`` less the ``unlearnt`` rows; the ensemble score of rows ``lo``
    up to ``end`` (each detector reads its context before ``lo``, not the whole prefix)."""
    series, detector_names, start, end, lo, unlearnt = task
    history = series.iloc[:start]
    if unlearnt.stop > unlearnt.start:
        history = history.copy()
        history.iloc[unlearnt] = np.nan
    detectors = fit_series(history, detector_names)
    # A row's score reads its detector's declared context only, so each detector scores the
    # new rows from that many rows before them: the same scores as from the series' start.
    scores = {}
    for name, detector in detectors.items():
        first = max(lo - detector.context_points(), 0)
        scores[name] = detector.score(series.iloc[first:end]).to_numpy()[lo - first:]
    return combine(scores)


def training_rows(n_rows: int, train_fraction: float) -> int:
    """The rows of a series the first fit sees (and scores in sample)."""
    return max(int(n_rows * train_fraction), MIN_TRAIN_POINTS)


def _segments(
    index: pd.DatetimeIndex, n_train: int, retrain_every: pd.Timedelta | None
) -> list[tuple[int, int]]:
    """``(fit_end, score_end)`` row positions: fit on ``[:fit_end]``, score up to ``score_end``."""
    if retrain_every is None:
        return [(n_train, len(index))]
    # Refits fall on multiples of the period since the epoch (midnight UTC for 1D), like a
    # scheduled job's, so that a replay of a longer file refits at the same instants.
    period = retrain_every.value
    first = (index[n_train].value // period + 1) * period
    refits = pd.DatetimeIndex(np.arange(first, index[-1].value + 1, period, dtype="int64"),
                              tz=index.tz)
    cuts = [n_train, *(int(i) for i in index.searchsorted(refits, side="left")), len(index)]
    cuts = sorted(set(cuts))
    return list(itertools.pairwise(cuts))


@dataclasses.dataclass(frozen=True)
class Replayed:
    """What :func:`detect` wrote: rows, rows repeating a timestamp, rows that came late, pages."""

    n_rows: int
    n_repeated: int = 0
    n_late: int = 0
    n_pages: int | None = None
    thresholds: tuple[float, ...] = ()


def arrival_order(stamps: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of a stream are scored, in the order they came: ``(taken, late)`` masks.

    A row is taken when its timestamp is later than every row's before it. A row that
    repeats an earlier timestamp is neither (it carries that timestamp's score); a row
    whose timestamp is earlier than a row's before it, and new, is late.
    """
    values = stamps.to_numpy(dtype="datetime64[ns]").astype("int64")
    before = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], values[:-1]]))
    taken = values > before
    late = ~taken & ~pd.Index(values).isin(pd.Index(values[taken]))
    return taken, late


def detect(
    source: str | Path,
    out: str | Path,
    *,
    detector: str | None = None,
    train_fraction: float = 0.15,
    retrain_every: pd.Timedelta | None = DEFAULT_RETRAIN_EVERY,
    policy: AlarmPolicy | None = None,
    refit_policy: AlarmPolicy | None = None,
    jobs: int = 1,
) -> Replayed:
    """Score ``source`` and write ``timestamp,value,anomaly_score[,page][,label]`` rows.

    With ``policy``, the ``page`` column (1 where that policy pages) is written.
    ``refit_policy`` (default ``policy``, else the default policy) is the one whose open
    incidents the refits leave out; ``jobs``: processes the refits of a series run in
    (:func:`score_series`).
    """
    refit_policy = refit_policy or policy
    names = (detector,) if detector else DEFAULT_DETECTORS
    source = Path(source)
    n_repeated = n_late = 0
    thresholds: set[float] = set()
    if source.is_dir():
        frame = read_dataset(source)
        parts = []
        for (service, metric), rows in split_series(frame):
            scores = score_series(to_series(rows), names, train_fraction, retrain_every, jobs,
                                  refit_policy)
            part = pd.DataFrame(
                {"service": service, "metric": metric, TIMESTAMP: rows[TIMESTAMP].to_numpy(),
                 VALUE: rows[VALUE].to_numpy(), "anomaly_score": scores.to_numpy()}
            )
            if policy is not None:
                part["page"], used = page_flags(scores, policy, train_fraction)
                thresholds.update(used)
            if IS_ANOMALY in rows.columns:
                part["label"] = rows[IS_ANOMALY].astype(int).to_numpy()
            parts.append(part)
        result = pd.concat(parts, ignore_index=True)
    else:
        if not source.exists():
            raise FileNotFoundError(f"input {source} does not exist")
        raw = read_csv_text(source)
        stamps = parse_timestamps(raw[TIMESTAMP], file=str(source), naive="utc")
        parse_values(raw[VALUE], file=str(source))  # a bad cell is named by its row in the file
        taken, late = arrival_order(stamps)
        n_late, n_repeated = int(late.sum()), int((~taken & ~late).sum())
        scores = score_series(to_series(value_frame(source, raw[taken])), names,
                              train_fraction, retrain_every, jobs, refit_policy)
        index = pd.DatetimeIndex(stamps)
        result = pd.DataFrame(
            {TIMESTAMP: raw[TIMESTAMP], VALUE: raw[VALUE],
             "anomaly_score": np.where(late, np.nan, scores.reindex(index).to_numpy())}
        )
        if policy is not None:
            paged, used = page_flags(scores, policy, train_fraction)
            thresholds.update(used)
            flags = pd.Series(paged, index=scores.index)
            # A page rings once: at the row that brought its timestamp, not at a repeat.
            result["page"] = np.where(taken, flags.reindex(index).fillna(0).to_numpy(), 0)
        if "label" in raw.columns:
            result["label"] = raw["label"]
        if n_repeated:
            _log.warning("%s: %d rows repeat the timestamp of an earlier row; they carry the "
                         "score of the first row at their timestamp", source, n_repeated)
        if n_late:
            _log.warning("%s: %d rows came late (a timestamp earlier than a row's before them, "
                         "and new); they are not scored (an empty score)", source, n_late)
    # No rounding: near 1 the digits that rounding would drop are what separates a page
    # from a non-event (0.9999 against 0.999999).
    result["anomaly_score"] = result["anomaly_score"].astype(float)
    n_pages = None
    if policy is not None:
        result["page"] = result["page"].astype(int)
        n_pages = int(result["page"].sum())
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    return Replayed(n_rows=len(result), n_repeated=n_repeated, n_late=n_late, n_pages=n_pages,
                    thresholds=tuple(sorted(thresholds)))


def page_flags(scores: pd.Series, policy: AlarmPolicy,
               train_fraction: float) -> tuple[np.ndarray, list[float]]:
    """1 where ``policy`` pages, and the distinct thresholds the rows were judged at.

    The first fit's training rows never page: the service had not scored them live.

    Each row is judged at the policy's threshold for the median step of the
    ``PAGE_STEP_POINTS`` rows up to it (the service takes each window's median step): the
    same threshold throughout for a series that keeps its step, and causal for one that
    changes it.
    """
    stamps = scores.index.as_unit("ns").asi8
    per_row = row_thresholds(stamps, policy)
    live = scores.to_numpy().copy()
    live[:training_rows(len(scores), train_fraction)] = np.nan
    flags = np.zeros(len(scores), dtype=int)
    flags[page_positions(stamps, live, per_row, policy.merge_gap_s,
                         policy.min_points, policy.lone_point_rarity)] = 1
    return flags, np.unique(per_row).tolist()


def row_thresholds(stamps: np.ndarray, policy: AlarmPolicy) -> np.ndarray:
    """The threshold of each row (int64 nanoseconds): ``policy``'s for the median step of the
    ``PAGE_STEP_POINTS`` rows up to it."""
    steps = np.diff(stamps, prepend=stamps[:1] - (stamps[1:2] - stamps[:1])) / 1e9
    trailing = pd.Series(steps).rolling(PAGE_STEP_POINTS, min_periods=1).median().to_numpy()
    return policy.thresholds_at(trailing)
