"""``aiops detect``: offline, causal replay of a series for evaluation.

Each series is fitted on its first ``train_fraction`` of rows and refitted
every day on every row before that day (as the nightly retraining job does;
``retrain_every`` changes the period, ``None`` fits once); every row
is scored as a stream would score it: a row's score depends on that row and
the rows before it only. The scores of the training rows are produced the
same way (by the model fitted on them), so the output has one score per input
row; evaluation tools such as NAB ignore the probationary part.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.csv_files import read_value_csv
from features.schema import IS_ANOMALY, TIMESTAMP, VALUE
from features.series import split_series, to_series
from features.store import read_dataset
from models.bundle import DEFAULT_DETECTORS, combine, fit_series

_log = logging.getLogger(__name__)

MIN_TRAIN_POINTS = 10
#: ``aiops detect`` refits daily by default, as the nightly retraining job does in production.
DEFAULT_RETRAIN_EVERY = pd.Timedelta(days=1)


def score_series(
    series: pd.Series,
    detector_names: tuple[str, ...] = DEFAULT_DETECTORS,
    train_fraction: float = 0.15,
    retrain_every: pd.Timedelta | None = None,
) -> pd.Series:
    """Fit on the first ``train_fraction`` of ``series`` and score every point causally.

    With ``retrain_every``, the replay refits the way the nightly job does in
    production: at every multiple of ``retrain_every`` (since the epoch: each
    midnight UTC for a day) after the first fit, the detectors are fitted
    again on every row before that instant, and the
    new models score the rows up to the next refit. Scores stay causal: a
    row is scored by a model fitted on earlier rows only.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction={train_fraction} must lie in (0, 1)")
    if retrain_every is not None and retrain_every <= pd.Timedelta(0):
        raise ValueError(f"retrain_every={retrain_every} must be positive")
    n_train = max(int(len(series) * train_fraction), MIN_TRAIN_POINTS)
    if n_train >= len(series):
        raise ValueError(
            f"series has {len(series)} points; need more than {MIN_TRAIN_POINTS} to fit and score"
        )
    combined = np.full(len(series), np.nan)
    for start, end in _segments(series.index, n_train, retrain_every):
        detectors = fit_series(series.iloc[:start], detector_names)
        # The first model also scores its own training rows (NAB ignores them as probation).
        lo = 0 if start == n_train else start
        scored = series.iloc[:end]
        segment = combine({name: d.score(scored).to_numpy()[lo:] for name, d in detectors.items()})
        combined[lo:end] = segment
    return pd.Series(combined, index=series.index, name="anomaly_score")


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


def detect(
    source: str | Path,
    out: str | Path,
    *,
    detector: str | None = None,
    train_fraction: float = 0.15,
    retrain_every: pd.Timedelta | None = DEFAULT_RETRAIN_EVERY,
) -> int:
    """Score ``source`` and write ``timestamp,value,anomaly_score[,label]`` rows; returns the count."""
    names = (detector,) if detector else DEFAULT_DETECTORS
    source = Path(source)
    if source.is_dir():
        frame = read_dataset(source)
        parts = []
        for (service, metric), rows in split_series(frame):
            scores = score_series(to_series(rows), names, train_fraction, retrain_every)
            part = pd.DataFrame(
                {"service": service, "metric": metric, TIMESTAMP: rows[TIMESTAMP].to_numpy(),
                 VALUE: rows[VALUE].to_numpy(), "anomaly_score": scores.to_numpy()}
            )
            if IS_ANOMALY in rows.columns:
                part["label"] = rows[IS_ANOMALY].astype(int).to_numpy()
            parts.append(part)
        result = pd.concat(parts, ignore_index=True)
    else:
        if not source.exists():
            raise FileNotFoundError(f"input {source} does not exist")
        unique = read_value_csv(source, duplicates="first")
        raw = pd.read_csv(source, dtype=str, keep_default_na=False)
        scores = score_series(to_series(unique), names, train_fraction, retrain_every)
        stamps = pd.to_datetime(raw[TIMESTAMP], utc=True, format="mixed").astype("datetime64[ns, UTC]")
        result = pd.DataFrame(
            {TIMESTAMP: raw[TIMESTAMP], VALUE: raw[VALUE],
             "anomaly_score": scores.reindex(pd.DatetimeIndex(stamps)).to_numpy()}
        )
        if "label" in raw.columns:
            result["label"] = raw["label"]
        n_repeats = int(stamps.duplicated().sum())
        if n_repeats:
            _log.warning("%s repeats %d timestamps; those rows carry the score of the first row "
                         "at their timestamp", source, n_repeats)
    # No rounding: near 1 the digits that rounding would drop are what separates a page
    # from a non-event (0.9999 against 0.999999).
    result["anomaly_score"] = result["anomaly_score"].astype(float)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    return len(result)
