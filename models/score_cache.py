"""Scores already computed, reused when a window slides: exact, bounded, least recently used out.

An alerting engine sends the same series every interval, its window moved on by a few
points. A detector's score of a point depends on the model and the
:meth:`~models.base.Detector.context_points` rows before it only, so where the new window
repeats the last one (the same timestamps and the same values, bit for bit) the scores of
its points with full context are those already computed. Only two short stretches are
scored again: the new points (from a window that starts their context before them) and the
window's first ``context`` points, which have less past in this window than in the last and
are scored from the window's own start, as a cold scoring would. The result equals scoring
the window cold, bit for bit (``tests/models/test_score_cache.py``).

One cache per process (a Serve replica), shared by its threads. An entry is the last window
of one detector of one series of one model: a model swap changes the model's token and so
misses; a value changed inside the overlap ends the reuse there. A lost cache costs speed only.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Collection, Hashable

import numpy as np
import pandas as pd

from models.base import Detector

#: The default bound on what the cache holds, in bytes (about 40 bytes a point).
DEFAULT_MAX_BYTES = 256 * 2**20

#: The detectors whose scores are kept by default: those whose cost grows with the points
#: scored. For the others a call's fixed cost outweighs what the points cost, and two
#: short calls (the window's head and the new points) cost more than one call on the whole
#: window (``benchmarks/score_speed.py``, the sliding run).
DEFAULT_CACHED_DETECTORS = frozenset({"random_forest", "lstm"})

#: What one more call to a detector costs beyond the points it scores, in points' worth of
#: work: the forest's cost per window is about that many points plus the window's length.
DEFAULT_CALL_COST_POINTS = 100


@dataclasses.dataclass(frozen=True)
class _Entry:
    stamps: np.ndarray  # int64 ns
    bits: np.ndarray  # the values as int64, so that equality means the same bits (NaN too)
    scores: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None

    @property
    def n_bytes(self) -> int:
        arrays = (self.stamps, self.bits, self.scores, self.low, self.high)
        return sum(a.nbytes for a in arrays if a is not None)

    def overlap(self, stamps: np.ndarray, bits: np.ndarray) -> tuple[int, int]:
        """Where the new window's first point sits in this entry, and how many points agree."""
        k = int(np.searchsorted(self.stamps, stamps[0]))
        if k == len(self.stamps) or self.stamps[k] != stamps[0]:
            return 0, 0
        n = min(len(self.stamps) - k, len(stamps))
        same = (self.stamps[k:k + n] == stamps[:n]) & (self.bits[k:k + n] == bits[:n])
        return k, n if same.all() else int(np.argmin(same))


@dataclasses.dataclass(frozen=True)
class ScoreCacheStats:
    """What the cache did: points reused and points scored, and what it holds."""

    reused_points: int
    scored_points: int
    n_entries: int
    n_bytes: int
    max_bytes: int
    n_evicted: int

    @property
    def hit_rate(self) -> float:
        """The fraction of points served from the cache (0 before any scoring)."""
        total = self.reused_points + self.scored_points
        return self.reused_points / total if total else 0.0


class ScoreCache:
    """Per-detector scores of the last window of each series, bounded by ``max_bytes``.

    Parameters
    ----------
    max_bytes
        What the entries may hold; the least recently used go first. An entry larger
        than the bound is not kept. 0 turns the cache off (every window is scored cold).
    detectors
        The names of the detectors whose scores are kept; the others are scored cold
        every time (and counted as scored).
    call_cost_points
        A call's fixed cost in points' worth of work: reuse, which makes two short calls
        instead of one, is taken only where it saves more points than that.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 detectors: Collection[str] = DEFAULT_CACHED_DETECTORS,
                 call_cost_points: int = DEFAULT_CALL_COST_POINTS) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes={max_bytes!r} must be an integer")
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes} must be 0 (off) or more")
        if isinstance(detectors, str):
            raise TypeError(f"detectors={detectors!r} must be a collection of names")
        self.max_bytes = max_bytes
        self.detectors = frozenset(detectors)
        if isinstance(call_cost_points, bool) or not isinstance(call_cost_points, int) \
                or call_cost_points < 0:
            raise ValueError(f"call_cost_points={call_cost_points!r} must be a whole number, "
                             f"0 or more")
        self.call_cost_points = call_cost_points
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._n_bytes = 0
        self._reused = self._scored = self._evicted = 0

    def stats(self) -> ScoreCacheStats:
        with self._lock:
            return ScoreCacheStats(self._reused, self._scored, len(self._entries),
                                   self._n_bytes, self.max_bytes, self._evicted)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._n_bytes = 0

    def score(
        self, key: Hashable, detector: Detector, window: pd.Series, with_range: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``detector``'s scores of ``window`` (and its expected range if ``with_range``).

        ``key`` names the model, series and detector: the caller makes it change when
        the model does. Equal to ``detector.score_with_range(window)`` (or ``score``), bit
        for bit, whatever the cache holds.
        """
        if self.max_bytes == 0 or detector.name not in self.detectors:
            scored = score_detector(detector, window, with_range)
            with self._lock:
                self._scored += len(window)
            return scored
        stamps = window.index.as_unit("ns").asi8
        bits = np.ascontiguousarray(window.to_numpy(dtype="float64")).view(np.int64)
        n, context = len(window), detector.context_points()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        k = m = 0
        if n and entry is not None and (entry.low is not None or not with_range):
            k, m = entry.overlap(stamps, bits)
        # Reuse pays when the points it saves (m - context) outnumber those it scores twice
        # (the window's first ``context`` points, and the context of the new points) by more
        # than the second call costs.
        if m - 2 * context <= self.call_cost_points:
            scores, low, high = score_detector(detector, window, with_range)
            reused = 0
        else:
            pieces = []
            if context:
                pieces.append(score_detector(detector, window.iloc[:context], with_range))
            pieces.append(tuple(None if a is None else a[k + context:k + m]
                                for a in (entry.scores, entry.low, entry.high)))
            if m < n:
                tail = score_detector(detector, window.iloc[m - context:], with_range)
                pieces.append(tuple(None if a is None else a[context:] for a in tail))
            columns = list(zip(*pieces, strict=True))
            scores = np.concatenate(columns[0])
            low, high = (np.concatenate(c) if with_range else None for c in columns[1:])
            reused = m - context
        kept_arrays = [None if a is None else a.copy() for a in (scores, low, high)]
        self._keep(key, _Entry(stamps.copy(), bits.copy(), *kept_arrays), reused, n - reused)
        return scores, low, high

    def _keep(self, key: Hashable, entry: _Entry, reused: int, scored: int) -> None:
        size = entry.n_bytes
        with self._lock:
            self._reused += reused
            self._scored += scored
            old = self._entries.pop(key, None)
            if old is not None:
                self._n_bytes -= old.n_bytes
            if size > self.max_bytes:
                return
            self._entries[key] = entry
            self._n_bytes += size
            while self._n_bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._n_bytes -= evicted.n_bytes
                self._evicted += 1


def score_detector(
    detector: Detector, window: pd.Series, with_range: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``detector``'s scores of ``window`` as arrays, and its expected range if ``with_range``."""
    if with_range:
        scores, low, high = detector.score_with_range(window)
        return (scores.to_numpy(dtype="float64"), np.asarray(low, dtype="float64"),
                np.asarray(high, dtype="float64"))
    return detector.score(window).to_numpy(dtype="float64"), None, None
