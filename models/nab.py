"""NAB-style scoring of alarms against labelled anomaly windows.

The Numenta Anomaly Benchmark (NAB) rewards a detector for alarming early
inside a labelled window, charges it for windows it misses and for alarms
outside every window, and normalises the total so that a detector that never
alarms scores 0 and one that alarms at the left edge of every window, and
nowhere else, scores 100. This module reimplements that scoring from its
published description (pure numpy/pandas, no file access):

- Positions are counted in **rows** of the file, not in time. A window
  ``[start, end]`` covers the rows whose timestamps lie in it; its width is
  its number of rows.
- For each window only the **earliest** alarm counts, as a true positive worth
  ``A_TP · S(y) / S(-1)`` with ``S(y) = 2·sigmoid(-5·y) - 1`` and
  ``y = -(right - i + 1) / width`` for an alarm at row ``i`` (``y = -1`` at
  the left edge, ``-1/width`` ≈ 0 at the right edge). Later alarms in the
  same window neither earn nor cost anything. A window without an alarm
  costs ``A_FN``.
- Every alarm outside all windows is judged on its own, as a false positive
  worth ``A_FP · S(y)`` (negative) with ``y = (i - right) / (width - 1)``
  measured from the right edge of the closest preceding window in that
  window's widths, and ``S(y) = -1`` from ``y >= 3`` on. An alarm with no
  window before it costs the full ``A_FP``.
- The first 15 % of a file's rows, at most 750, are a probationary period: its
  alarms are ignored, and a window lying wholly inside it is not scored.
- A profile's null score is ``-A_FN`` per scored window and its perfect score
  ``A_TP`` per scored window; ``normalised = 100 · (raw - null) / (perfect - null)``.
- One threshold per detector and profile is chosen for the whole corpus, the
  one that maximises the corpus's raw score; :func:`sweep_threshold` tries
  every distinct score value, exactly.

The module stays whole: it is one published scoring rule and the sweeps that
apply it, checked against that description side by side.

Examples
--------
>>> stamps = list(range(10))
>>> alarms = [False, False, False, False, True, False, False, False, False, False]
>>> result = score_file(stamps, alarms, [(4, 7)], PROFILES["standard"], probation_rows=0)
>>> round(result.raw, 6), result.normalised
(1.0, 100.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from models.alarms import AlarmPolicy, page_positions

__all__ = [
    "PROBATION_FRACTION",
    "PROBATION_MAX_ROWS",
    "PROFILES",
    "FileScore",
    "Profile",
    "ScoredFile",
    "SweepResult",
    "normalised",
    "null_score",
    "perfect_score",
    "probation_length",
    "scaled_sigmoid",
    "score_file",
    "sweep_threshold",
]

#: Share of a file's rows, at its start, whose alarms are not scored.
PROBATION_FRACTION = 0.15
#: Upper bound on the probationary period in rows (NAB: 15 % of 5,000 rows).
PROBATION_MAX_ROWS = 750
#: Relative positions at or beyond this many window widths past a window cost the full A_FP.
_FAR_PAST_WINDOW = 3.0
#: Two corpus scores closer than this are a tie; the higher threshold then wins.
_TIE_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    """Weights of a NAB application profile.

    Parameters
    ----------
    name : str
        The profile's name, as reported.
    tp_weight : float
        ``A_TP``, the reward of an alarm at the left edge of a window; > 0.
    fn_weight : float
        ``A_FN``, the cost of a window without any alarm; > 0.
    fp_weight : float
        ``A_FP``, the cost of an alarm far from any window; > 0.

    Raises
    ------
    ValueError
        If a weight is not a finite positive number.
    """

    name: str
    tp_weight: float = 1.0
    fn_weight: float = 1.0
    fp_weight: float = 0.11

    def __post_init__(self) -> None:
        for field in ("tp_weight", "fn_weight", "fp_weight"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TypeError(f"{field} must be a number, got {type(value).__name__}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{field}={value!r} is out of range; allowed: a finite number > 0")


#: The three NAB profiles: standard, reward low false positives, reward low false negatives.
PROFILES: dict[str, Profile] = {
    "standard": Profile(name="standard", tp_weight=1.0, fn_weight=1.0, fp_weight=0.11),
    "reward_low_fp": Profile(name="reward_low_fp", tp_weight=1.0, fn_weight=1.0, fp_weight=0.22),
    "reward_low_fn": Profile(name="reward_low_fn", tp_weight=1.0, fn_weight=2.0, fp_weight=0.11),
}


def probation_length(
    n_rows: int,
    fraction: float = PROBATION_FRACTION,
    max_rows: int = PROBATION_MAX_ROWS,
) -> int:
    """Rows at the start of a file whose alarms are not scored: ``min(floor(fraction·n), max_rows)``.

    Raises
    ------
    ValueError
        If ``n_rows`` or ``max_rows`` is negative or ``fraction`` lies outside [0, 1].
    """
    if n_rows < 0 or max_rows < 0:
        raise ValueError(f"n_rows={n_rows} and max_rows={max_rows} must be >= 0")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} is out of range; allowed: 0 <= fraction <= 1")
    return int(min(math.floor(fraction * n_rows), max_rows))


def scaled_sigmoid(position: np.ndarray | float) -> np.ndarray:
    """NAB's weighting ``2·sigmoid(-5·y) - 1`` of a relative position ``y``; -1 from ``y >= 3``.

    ``y = -1`` (left edge of a window) gives 0.98661, ``y = 0`` (right edge)
    gives 0, ``y = 1`` (one window width past it) gives -0.98661.
    """
    y = np.asarray(position, dtype=np.float64)
    # 2·sigmoid(x) - 1 == tanh(x / 2), which does not overflow for large |x|.
    return np.where(y >= _FAR_PAST_WINDOW, -1.0, np.tanh(-2.5 * y))


_MAX_TP_WEIGHT = float(scaled_sigmoid(-1.0))


def null_score(n_windows: int, profile: Profile) -> float:
    """Raw score of a detector that never alarms: ``-A_FN`` per scored window."""
    return 0.0 - profile.fn_weight * n_windows  # 0.0 - ... gives 0.0, not -0.0, without windows


def perfect_score(n_windows: int, profile: Profile) -> float:
    """Raw score of alarms at the left edge of every window and nowhere else: ``A_TP`` per window."""
    return profile.tp_weight * n_windows


def normalised(raw: float, null: float, perfect: float) -> float:
    """``100 · (raw - null) / (perfect - null)``: 0 for the null detector, 100 for a perfect one.

    NaN when ``perfect == null``, i.e. for files or corpora without any scored
    window, where NAB's normalisation is undefined (report the raw score and
    the false-positive count instead).
    """
    if perfect == null:
        return float("nan")
    return 100.0 * (raw - null) / (perfect - null)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileScore:
    """NAB score of the alarms of one file (or, summed with ``+``, of several).

    Attributes
    ----------
    raw : float
        Sum of true-positive rewards, false-negative and false-positive costs.
    null, perfect : float
        Raw scores of the null and the perfect detector on the same windows.
    n_windows : int
        Windows scored (those with at least one row after the probationary period).
    n_tp, n_fn : int
        Windows with, and without, an alarm.
    n_fp : int
        Alarms outside every window, after the probationary period.
    """

    raw: float
    null: float
    perfect: float
    n_windows: int
    n_tp: int
    n_fn: int
    n_fp: int

    @property
    def normalised(self) -> float:
        """The raw score on NAB's 0 (null) to 100 (perfect) scale; NaN without windows."""
        return normalised(self.raw, self.null, self.perfect)

    def __add__(self, other: FileScore) -> FileScore:
        return FileScore(**{
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in dataclasses.fields(self)
        })


class ScoredFile(NamedTuple):
    """One file of a corpus as :func:`sweep_threshold` needs it.

    ``timestamps`` are the file's rows in order (repeats allowed); ``scores``
    one anomaly score per row (NaN never alarms); ``windows`` the labelled
    ``(start, end)`` pairs, comparable with the timestamps; ``probation_rows``
    the length of the probationary period (see :func:`probation_length`).
    """

    timestamps: Any
    scores: Any
    windows: Sequence[tuple[Any, Any]]
    probation_rows: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepResult:
    """The best corpus-wide threshold of a detector for one profile.

    Attributes
    ----------
    threshold : float
        Alarms are ``scores >= threshold``; ``inf`` when never alarming is best.
    normalised : float
        The corpus's normalised score at that threshold (NaN without windows).
    raw, null, perfect : float
        The corpus's raw score at that threshold and its null and perfect scores.
    n_windows : int
        Windows scored over the corpus.
    n_candidates : int
        Thresholds tried: every distinct score value, plus "never alarm".
    """

    threshold: float
    normalised: float
    raw: float
    null: float
    perfect: float
    n_windows: int
    n_candidates: int


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What the geometry of one file implies for every row, independent of alarms and profile."""

    window_of_row: np.ndarray  # index of the window holding the row, -1 outside all windows
    tp_factor: np.ndarray  # S(y)/S(-1) for rows in a window, 0 elsewhere
    fp_factor: np.ndarray  # S(y) (in [-1, 0)) for rows outside windows, 0 elsewhere
    scorable: np.ndarray  # rows after the probationary period
    scored_windows: np.ndarray  # indices of windows with at least one scorable row


def _layout(timestamps: Any, windows: Sequence[tuple[Any, Any]], probation_rows: int) -> _Layout:
    index = pd.Index(timestamps)
    n_rows = len(index)
    if isinstance(probation_rows, bool) or not isinstance(probation_rows, int | np.integer):
        raise TypeError(f"probation_rows must be an int, got {type(probation_rows).__name__}")
    if probation_rows < 0:
        raise ValueError(f"probation_rows={probation_rows} is out of range; allowed: >= 0")
    if n_rows and not index.is_monotonic_increasing:
        raise ValueError("timestamps must be in non-decreasing order")

    # Rows of each window: from the first row at or after start to the last at or before end.
    lefts, rights = [], []
    for k, span in enumerate(windows):
        if len(span) != 2:
            raise ValueError(f"window {k} is {span!r}; expected a (start, end) pair")
        start, end = span
        if end < start:
            raise ValueError(f"window {k} ends ({end}) before it starts ({start})")
        left = int(index.searchsorted(start, side="left"))
        right = int(index.searchsorted(end, side="right")) - 1
        if left <= right:  # a window that holds no row cannot be scored
            lefts.append(left)
            rights.append(right)
    left_rows = np.asarray(lefts, dtype=np.int64)
    right_rows = np.asarray(rights, dtype=np.int64)
    order = np.argsort(left_rows, kind="stable")
    left_rows, right_rows = left_rows[order], right_rows[order]
    if np.any(left_rows[1:] <= right_rows[:-1]):
        raise ValueError("windows overlap; NAB windows must be disjoint")
    widths = right_rows - left_rows + 1

    rows = np.arange(n_rows)
    window_of_row = np.full(n_rows, -1, dtype=np.int64)
    tp_factor = np.zeros(n_rows)
    for k, (left, right) in enumerate(zip(left_rows, right_rows, strict=True)):
        window_of_row[left : right + 1] = k
        inside = rows[left : right + 1]
        tp_factor[left : right + 1] = (
            scaled_sigmoid(-(right - inside + 1) / widths[k]) / _MAX_TP_WEIGHT
        )

    # Outside windows: distance past the closest window whose right edge lies before the row.
    fp_factor = np.zeros(n_rows)
    outside = np.flatnonzero(window_of_row < 0)
    previous = np.searchsorted(right_rows, outside, side="left") - 1
    has_previous = previous >= 0
    fp_factor[outside[~has_previous]] = -1.0
    prev = previous[has_previous]
    rows_after = outside[has_previous]
    # NAB divides by width - 1; a one-row window would divide by zero, so use at least 1.
    spans = np.maximum(widths[prev] - 1, 1)
    fp_factor[rows_after] = scaled_sigmoid((rows_after - right_rows[prev]) / spans)

    scorable = rows >= probation_rows
    scored_windows = np.flatnonzero(right_rows >= probation_rows)
    return _Layout(window_of_row, tp_factor, fp_factor, scorable, scored_windows)


def _as_flags(values: Any, name: str, n_rows: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != n_rows:
        raise ValueError(f"{name} has shape {array.shape}; expected ({n_rows},), one per timestamp")
    return array


def score_file(
    timestamps: Any,
    alarms: Any,
    windows: Sequence[tuple[Any, Any]],
    profile: Profile,
    probation_rows: int,
) -> FileScore:
    """Score one file's alarms against its labelled windows, as NAB does.

    Parameters
    ----------
    timestamps : array-like
        The file's timestamps, one per row, in non-decreasing order (a
        repeated timestamp is one more row). Any type that sorts and compares
        with the window edges: datetimes, or plain row numbers.
    alarms : array-like of bool
        Whether the detector alarms at each row.
    windows : sequence of (start, end)
        Labelled anomaly windows, both edges inclusive, disjoint. A window
        holding no row is skipped.
    profile : Profile
        The weights, e.g. ``PROFILES["standard"]``.
    probation_rows : int
        Rows at the start whose alarms are ignored (see :func:`probation_length`).

    Returns
    -------
    FileScore
        The raw score, the null and perfect scores for normalisation, and counts.

    Raises
    ------
    ValueError
        If lengths differ, timestamps go backwards, a window ends before it
        starts, windows overlap, or ``probation_rows`` is negative.
    TypeError
        If ``probation_rows`` is not an int.
    """
    layout = _layout(timestamps, windows, probation_rows)
    n_rows = layout.window_of_row.shape[0]
    flags = _as_flags(alarms, "alarms", n_rows)
    if flags.dtype != bool:
        if np.issubdtype(flags.dtype, np.floating) and np.isnan(flags).any():
            raise ValueError("alarms holds NaN; pass booleans (scores >= threshold)")
        flags = flags.astype(bool)
    return _score_layout(layout, flags, profile)


def _score_layout(layout: _Layout, flags: np.ndarray, profile: Profile) -> FileScore:
    alarmed = np.flatnonzero(flags & layout.scorable)

    in_window = layout.window_of_row[alarmed]
    # alarmed is ascending, so the first occurrence of each window is its earliest alarm.
    hit_windows, first = np.unique(in_window[in_window >= 0], return_index=True)
    earliest = alarmed[in_window >= 0][first]
    tp_score = profile.tp_weight * float(layout.tp_factor[earliest].sum())
    n_windows = int(layout.scored_windows.size)
    n_tp = int(hit_windows.size)
    false_alarms = alarmed[in_window < 0]
    fp_score = profile.fp_weight * float(layout.fp_factor[false_alarms].sum())
    fn_score = -profile.fn_weight * (n_windows - n_tp)
    return FileScore(
        raw=tp_score + fp_score + fn_score,
        null=null_score(n_windows, profile),
        perfect=perfect_score(n_windows, profile),
        n_windows=n_windows,
        n_tp=n_tp,
        n_fn=n_windows - n_tp,
        n_fp=int(false_alarms.size),
    )


def _threshold_events(file: ScoredFile, profile: Profile) -> tuple[np.ndarray, np.ndarray, int]:
    """(score, change in raw score) pairs: lowering the threshold to ``score`` adds the change.

    An alarm outside windows adds its own (negative) cost. Inside a window, the
    reward is that of the earliest alarm, i.e. the best weight among the rows
    alarmed so far, so each row adds the rise of the running maximum, the first
    one also lifting the window from ``-A_FN``.
    """
    timestamps, scores, windows, probation_rows = file
    layout = _layout(timestamps, windows, probation_rows)
    values = _as_flags(scores, "scores", layout.window_of_row.shape[0]).astype(np.float64)
    live = layout.scorable & ~np.isnan(values)

    outside = np.flatnonzero(live & (layout.window_of_row < 0))
    parts_at = [values[outside]]
    parts_change = [profile.fp_weight * layout.fp_factor[outside]]
    for k in layout.scored_windows:
        rows = np.flatnonzero(live & (layout.window_of_row == k))
        if rows.size == 0:
            continue
        by_score = rows[np.argsort(-values[rows], kind="stable")]
        best = profile.tp_weight * np.maximum.accumulate(layout.tp_factor[by_score])
        parts_at.append(values[by_score])
        parts_change.append(np.diff(best, prepend=-profile.fn_weight))
    return np.concatenate(parts_at), np.concatenate(parts_change), int(layout.scored_windows.size)


def sweep_threshold(files: Sequence[ScoredFile | tuple], profile: Profile) -> SweepResult:
    """Choose the one threshold that maximises the corpus's raw NAB score.

    Every distinct score value is tried as a threshold (alarms are
    ``scores >= threshold``), plus "never alarm", so the result is exact, not
    a grid search. Ties go to the highest threshold, i.e. the fewest alarms.

    Parameters
    ----------
    files : sequence of ScoredFile or (timestamps, scores, windows, probation_rows)
        The corpus; see :class:`ScoredFile`.
    profile : Profile
        The weights, e.g. ``PROFILES["standard"]``.

    Returns
    -------
    SweepResult
        The threshold, the corpus's normalised and raw scores at it, and the
        null and perfect scores.

    Raises
    ------
    ValueError
        As :func:`score_file`, for any file; or if ``files`` is empty.
    """
    if len(files) == 0:
        raise ValueError("files is empty; the sweep needs at least one file")
    at, change, n_windows = [], [], 0
    for file in files:
        file_at, file_change, file_windows = _threshold_events(ScoredFile(*file), profile)
        at.append(file_at)
        change.append(file_change)
        n_windows += file_windows
    thresholds, position = np.unique(np.concatenate(at), return_inverse=True)
    step = np.bincount(position, weights=np.concatenate(change), minlength=thresholds.size)
    null = null_score(n_windows, profile)
    # From the highest threshold down, each one adds the changes of the rows scoring exactly it.
    candidates = np.concatenate([[np.inf], thresholds[::-1]])
    raw = null + np.concatenate([[0.0], np.cumsum(step[::-1])])
    best = int(np.flatnonzero(raw >= raw.max() - _TIE_TOLERANCE)[0])
    perfect = perfect_score(n_windows, profile)
    return SweepResult(
        threshold=float(candidates[best]),
        normalised=normalised(float(raw[best]), null, perfect),
        raw=float(raw[best]),
        null=null,
        perfect=perfect,
        n_windows=n_windows,
        n_candidates=int(candidates.size),
    )


def onset_alarms(timestamps: Any, scores: np.ndarray, threshold: float,
                 merge_gap: np.timedelta64 | pd.Timedelta, policy: AlarmPolicy | None = None
                 ) -> np.ndarray:
    """Alarms as a pager sends them: one per incident, when the incident is confirmed.

    Points scoring at or above ``threshold`` that lie within ``merge_gap`` of
    the previous such point belong to the same incident (as in
    :func:`models.alarms.find_incidents`), so a level shift that keeps scoring
    high raises one alarm, not one per row. The alarm is at the point where
    ``policy`` confirms the incident (:func:`models.alarms.page_positions`);
    without a policy, at its first point.
    """
    values = np.asarray(scores, dtype="float64")
    stamps = pd.DatetimeIndex(timestamps).as_unit("ns").asi8
    gap_s = pd.Timedelta(merge_gap).total_seconds()
    if policy is None:
        pages = page_positions(stamps, values, threshold, gap_s)
    else:
        pages = page_positions(stamps, values, threshold, gap_s, policy.min_points,
                               policy.lone_point_rarity)
    flags = np.zeros(values.shape[0], dtype=bool)
    flags[pages] = True
    return flags


def sweep_onset_threshold(
    files: Sequence[ScoredFile | tuple],
    profile: Profile,
    *,
    merge_gap: np.timedelta64 | pd.Timedelta,
    n_candidates: int = 300,
    policy: AlarmPolicy | None = None,
) -> SweepResult:
    """The corpus-wide threshold that maximises the NAB score of :func:`onset_alarms`.

    Onset alarms do not grow monotonically as the threshold falls (two
    incidents can merge into one), so the exact sweep of :func:`sweep_threshold`
    does not apply; this tries about ``2 · n_candidates`` thresholds: quantiles
    of all scores evenly from the median up and log-spaced toward the highest,
    plus fine steps toward 1, plus "never alarm".
    """
    if len(files) == 0:
        raise ValueError("files is empty; the sweep needs at least one file")
    corpus = [ScoredFile(*f) for f in files]
    layouts = [_layout(f.timestamps, f.windows, f.probation_rows) for f in corpus]
    pooled = np.concatenate([np.asarray(f.scores, dtype="float64") for f in corpus])
    pooled = pooled[np.isfinite(pooled)]
    fine = 1.0 - np.logspace(-1, -6, 26)
    # Quantile levels even from the median up, and log-spaced toward the top, where the
    # thresholds that matter lie (1 - 1e-6 is one point in a million).
    levels = np.concatenate([np.linspace(0.5, 1.0, n_candidates),
                             1.0 - np.logspace(np.log10(0.5), -6, n_candidates)])
    candidates = np.unique(np.concatenate([
        np.quantile(pooled, levels) if pooled.size else [], fine, [1.0],
    ]))
    n_windows = sum(int(layout.scored_windows.size) for layout in layouts)
    null, perfect = null_score(n_windows, profile), perfect_score(n_windows, profile)
    best_threshold, best_raw = float("inf"), null
    for threshold in candidates[::-1]:  # high to low: ties keep the higher threshold
        raw = sum(
            _score_layout(layout, onset_alarms(f.timestamps, f.scores, threshold, merge_gap,
                                               policy), profile).raw
            for f, layout in zip(corpus, layouts, strict=True)
        )
        if raw > best_raw + _TIE_TOLERANCE:
            best_threshold, best_raw = float(threshold), raw
    return SweepResult(
        threshold=best_threshold,
        normalised=normalised(best_raw, null, perfect),
        raw=best_raw,
        null=null,
        perfect=perfect,
        n_windows=n_windows,
        n_candidates=int(candidates.size) + 1,
    )
