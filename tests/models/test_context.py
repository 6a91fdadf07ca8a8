"""A point's score depends on the model and its declared context only, bit for bit.

Every registered detector declares :meth:`~models.base.Detector.context_points`:
a point with that many rows before it in a window scores the same as in any
longer window ending at it. Random windows over a seeded series with gaps,
timestamp jumps and a spike check it for every detector, and for the default
ensemble of a known and of an unseen series, on the score and the expected range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import make_detector, registered_names, registry_class
from models.arima import ArimaDetector, ArimaDetectorConfig
from models.score_cache import score_detector
from tests.models.streams import KNOWN, bits, ensemble_arrays, streams

NAMES = registered_names()


@st.composite
def cuts(draw: st.DrawFn, n: int, context: int) -> tuple[int, int, int]:
    """A window end, a wide start and a later start that leaves the compared rows ``context``."""
    end = draw(st.integers(context + 1, n))
    late = draw(st.integers(0, end - context - 1))
    early = draw(st.integers(0, late))
    return early, late, end


def assert_same_from(
    wide: tuple[np.ndarray, ...], narrow: tuple[np.ndarray, ...], offset: int, context: int
) -> None:
    """Rows of ``narrow`` from ``context`` on equal the matching rows of ``wide``, bit for bit."""
    for a, b in zip(wide, narrow, strict=True):
        np.testing.assert_array_equal(bits(a[offset + context:]), bits(b[context:]))


@pytest.fixture(scope="module")
def base(make_daily_sine) -> pd.Series:
    return make_daily_sine(900, seed=11, start="2026-01-08T00:00Z")


def check_context(score: Callable[[pd.Series], tuple], base: pd.Series, context: int,
                  max_examples: int) -> None:
    """``score``'s arrays agree from ``context`` rows in, between random longer and shorter
    windows ending at the same point."""

    @settings(max_examples=max_examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        stream = data.draw(streams(base))
        early, late, end = data.draw(cuts(len(stream), context))
        wide, narrow = (score(stream.iloc[start:end]) for start in (early, late))
        assert_same_from(wide, narrow, late - early, context)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_a_point_with_its_declared_context_scores_as_in_any_longer_window(
    name, fitted_on_history, base
):
    detector = fitted_on_history(registry_class(name))
    context = detector.context_points()
    assert isinstance(context, int) and context >= 0
    check_context(lambda window: score_detector(detector, window, True), base, context, 25)


@pytest.mark.parametrize("series", [KNOWN, ("nobody", "cpu")], ids=["known", "unseen"])
def test_the_ensemble_declares_the_context_of_its_widest_detector(ensemble, base, series):
    context = ensemble.context_points(*series)
    if series == KNOWN:
        assert context == max(d.context_points() for d in ensemble.detectors[KNOWN].values())
    else:
        assert context == ensemble.fallback.context_points()
    check_context(lambda window: ensemble_arrays(ensemble.score(*series, window)), base,
                  context, 20)


def test_the_ensemble_context_refuses_a_detector_the_series_lacks(ensemble):
    with pytest.raises(ValueError, match=r"not trained for checkout/latency"):
        ensemble.context_points(*KNOWN, detectors=["lstm"])


@pytest.mark.parametrize(
    ("steps", "run_starts", "expected_rows"),
    [
        # A regular grid from step 3: restarts at steps 8 and 16, wherever the window starts.
        (np.arange(3, 20), [0], [5, 13]),
        # Twice as fine as trained: a block of 8 steps holds 16 rows and restarts after 8 rows.
        (np.arange(0, 12, 0.5), [0], [8, 16]),
        # Four times as fine with a run start (after a missing value) at row 5: counted from it.
        (np.arange(0, 4, 0.25), [0, 5], [13]),
    ],
)
def test_restarts_sit_on_the_clock_grid(steps, run_starts, expected_rows):
    detector = ArimaDetector(ArimaDetectorConfig(restart_every=8))
    detector.step_ns_ = 1_000
    stamps = np.round(np.asarray(steps) * 1_000).astype("int64")
    starts = np.zeros(len(stamps), dtype=bool)
    starts[run_starts] = True
    assert np.flatnonzero(detector._restarts(stamps, starts)).tolist() == expected_rows


def test_a_detector_that_does_not_declare_its_context_says_so():
    detector = make_detector("static_threshold")
    assert detector.context_points() == 0
    from models.base import Detector

    with pytest.raises(NotImplementedError, match="does not declare its context"):
        Detector.context_points(detector)
