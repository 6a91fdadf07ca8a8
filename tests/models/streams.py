"""Hypothesis strategies for windows of a series, shared by the context and cache tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from models.bundle import SeriesScores

#: The series the test ensembles are trained for.
KNOWN = ("checkout", "latency")


def bits(values: np.ndarray) -> np.ndarray:
    """The float64 array as integers, so that equality means the same bits (NaN included)."""
    return np.ascontiguousarray(values, dtype="float64").view(np.int64)


def ensemble_arrays(result: SeriesScores) -> tuple[np.ndarray, ...]:
    """Everything an ensemble scoring returns per point: score, range, each detector's score."""
    return (result.score, result.expected_low, result.expected_high,
            *(result.detector_scores[n] for n in sorted(result.detector_scores)))


@st.composite
def streams(draw: st.DrawFn, base: pd.Series) -> pd.Series:
    """The base series with missing values, dropped rows (timestamp jumps) and a spike."""
    n = len(base)
    out = base.copy()
    missing = draw(st.lists(st.integers(0, n - 1), max_size=12))
    out.iloc[missing] = np.nan
    spike = draw(st.integers(0, n - 1))
    out.iloc[spike] = out.iloc[spike] + draw(st.sampled_from([-30.0, 25.0, 400.0]))
    dropped = draw(st.lists(st.integers(0, n - 1), max_size=6))
    return out.drop(out.index[sorted(set(dropped))])
