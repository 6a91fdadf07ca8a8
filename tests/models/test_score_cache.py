"""A window scored through the cache scores as it does cold, bit for bit, and costs less.

Random sequences of windows over a seeded series — slides by a few points, jumps back and
forward, gaps, a value changed inside the overlap, a model swapped — are scored through one
cache and cold, for every registered detector and for the default ensemble.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import make_detector, registered_names, registry_class
from models.bundle import DEFAULT_DETECTORS, DetectorBundle
from models.score_cache import DEFAULT_CACHED_DETECTORS, ScoreCache, score_detector
from tests.models.streams import KNOWN, bits, ensemble_arrays, streams

#: Every detector's scores kept, so that each takes the path that reuses.
EVERY = frozenset(registered_names())


@pytest.fixture(scope="module")
def base(make_daily_sine) -> pd.Series:
    return make_daily_sine(900, seed=12, start="2026-01-08T00:00Z")


@st.composite
def moves(draw: st.DrawFn, n: int) -> list[tuple[int, int, int | None]]:
    """Windows ``(start, end, changed row)`` that mostly slide on by a few points."""
    lengths = st.sampled_from([360, 400]) | st.integers(1, 400)  # an hour at 10 s, or any
    length = draw(lengths)
    start = draw(st.integers(0, n - 1))
    out = []
    for _ in range(draw(st.integers(2, 6))):
        if draw(st.booleans()):
            start += draw(st.integers(0, 12))  # an alerting engine's next interval
        else:
            start = draw(st.integers(0, n - 1))
            length = draw(lengths)
        start = min(start, n - 1)
        end = min(start + length, n)
        changed = draw(st.none() | st.integers(start, end - 1))
        out.append((start, end, changed))
    return out


def assert_same(a: tuple, b: tuple) -> None:
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None
        else:
            np.testing.assert_array_equal(bits(x), bits(y))


def windows(stream: pd.Series, plan: list[tuple[int, int, int | None]]):
    for start, end, changed in plan:
        window = stream.iloc[start:end].copy()
        if changed is not None:  # a value the source corrected since the last request
            window.iloc[changed - start] += 3.0
        yield window


def check_through_cache(cached: Callable[[pd.Series, ScoreCache], tuple],
                        cold: Callable[[pd.Series], tuple], base: pd.Series,
                        max_examples: int) -> None:
    """Random sequences of windows score the same through one cache as cold; some reuse."""
    reused = []

    @settings(max_examples=max_examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        stream = data.draw(streams(base))
        cache = ScoreCache(detectors=EVERY, call_cost_points=0)
        for window in windows(stream, data.draw(moves(len(stream)))):
            assert_same(cached(window, cache), cold(window))
        reused.append(cache.stats().reused_points)

    check()
    assert sum(reused) > 0  # the examples did take the path that reuses


@pytest.mark.parametrize("name", registered_names())
def test_a_detector_scores_through_the_cache_as_cold(name, fitted_on_history, base):
    detector = fitted_on_history(registry_class(name))
    with_range = detector.provides_expected_range
    check_through_cache(
        lambda window, cache: cache.score(("m", name), detector, window, with_range),
        lambda window: score_detector(detector, window, with_range), base, 25)


def test_a_sliding_window_reuses_all_but_its_new_points_and_context(fitted_on_history, base):
    detector = fitted_on_history(registry_class("arima"))
    context = detector.context_points()
    cache = ScoreCache(detectors=EVERY, call_cost_points=0)
    cache.score("k", detector, base.iloc[0:360], True)
    assert cache.stats().reused_points == 0
    cache.score("k", detector, base.iloc[6:366], True)
    stats = cache.stats()
    assert stats.reused_points == 360 - 6 - context
    assert stats.scored_points == 360 + 6 + context
    assert stats.n_entries == 1 and stats.n_bytes == 360 * 8 * 5
    assert 0 < stats.hit_rate < 1


def scored(bundle: DetectorBundle, series: tuple[str, str], window: pd.Series,
           cache: ScoreCache | None) -> tuple:
    return ensemble_arrays(bundle.score(*series, window, cache=cache))


@pytest.mark.parametrize("series", [KNOWN, ("nobody", "cpu")], ids=["known", "unseen"])
def test_the_ensemble_scores_through_the_cache_as_cold(ensemble, base, series):
    check_through_cache(lambda window, cache: scored(ensemble, series, window, cache),
                        lambda window: scored(ensemble, series, window, None), base, 20)


def test_a_swapped_model_does_not_reuse_the_old_models_scores(fitted_on_history, base):
    old = {name: fitted_on_history(registry_class(name)) for name in DEFAULT_DETECTORS}
    # The same detectors, but ARIMA refitted on a different history: what a new version is.
    new = dict(old, arima=make_detector("arima").fit(base.iloc[:600] * 2.0))
    cache = ScoreCache(detectors=EVERY, call_cost_points=0)
    before, after = DetectorBundle({KNOWN: old}), DetectorBundle({KNOWN: new})
    scored(before, KNOWN, base.iloc[300:660], cache)
    window = base.iloc[306:666]
    assert_same(scored(after, KNOWN, window, cache), scored(after, KNOWN, window, None))
    assert not np.array_equal(bits(scored(after, KNOWN, window, None)[0]),
                              bits(scored(before, KNOWN, window, None)[0]))


def test_the_cache_holds_its_bound_least_recently_used_out(fitted_on_history, base):
    detector = make_detector("static_threshold").fit(base)
    entry = 100 * 8 * 3  # stamps, value bits and scores of 100 points
    cache = ScoreCache(max_bytes=2 * entry, detectors=EVERY, call_cost_points=0)
    for key in ("a", "b", "a", "c"):  # "a" used again, so "b" goes first
        cache.score(key, detector, base.iloc[:100], False)
    stats = cache.stats()
    assert (stats.n_entries, stats.n_bytes, stats.n_evicted) == (2, 2 * entry, 1)
    cache.score("a", detector, base.iloc[1:101], False)
    assert cache.stats().reused_points == 100 + 99  # the second "a" whole, this one but 1


def test_a_cache_of_size_zero_keeps_nothing_and_scores_the_same(fitted_on_history, base):
    detector = fitted_on_history(registry_class("dynamic_threshold"))
    cache = ScoreCache(max_bytes=0)
    for start in (0, 5):
        window = base.iloc[start:start + 300]
        assert_same(cache.score("k", detector, window, False),
                    (detector.score(window).to_numpy(), None, None))
    assert cache.stats().n_entries == 0 and cache.stats().reused_points == 0


def test_by_default_only_the_detectors_where_reuse_pays_are_kept(ensemble, base):
    cache = ScoreCache()
    for start in (0, 6):
        scored(ensemble, KNOWN, base.iloc[start:start + 360], cache)
    stats = cache.stats()
    kept = DEFAULT_CACHED_DETECTORS & set(ensemble.detectors[KNOWN])
    assert kept == {"random_forest"}
    assert stats.n_entries == 1
    context = ensemble.detectors[KNOWN]["random_forest"].context_points()
    assert stats.reused_points == 360 - 6 - context
    assert stats.scored_points == 4 * 2 * 360 - stats.reused_points


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), (1.5, TypeError),
                                              (True, TypeError)])
def test_a_bad_bound_is_refused_naming_it(value, error):
    with pytest.raises(error, match="max_bytes"):
        ScoreCache(max_bytes=value)


def test_reuse_is_taken_only_where_it_saves_more_than_a_call(fitted_on_history, base):
    detector = fitted_on_history(registry_class("random_forest"))
    context = detector.context_points()
    cache = ScoreCache()  # the default call cost
    for start in (0, 1):  # 60-point windows: too short for reuse to pay
        cache.score("short", detector, base.iloc[start:start + 60], False)
    assert cache.stats().reused_points == 0
    for start in (0, 6):  # 360 points: it does
        cache.score("long", detector, base.iloc[start:start + 360], False)
    assert cache.stats().reused_points == 360 - 6 - context


def test_detector_names_must_be_a_collection():
    with pytest.raises(TypeError, match="detectors"):
        ScoreCache(detectors="arima")
    with pytest.raises(ValueError, match="call_cost_points"):
        ScoreCache(call_cost_points=-1)
