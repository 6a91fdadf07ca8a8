"""What the model contract adds for a detector, over every registered detector.

A detector enrols by registering: the suite is parametrised over
``models.registered_names()``. Each class carries its cheap test config
(``_test_config()``); one that needs no fit says so with ``requires_fit = False``.
What every model shares (fit, persistence, not fitted, config) is in
``test_model_contract.py``; the forecasters have their own part in
``test_forecaster_contract.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import Detector, make_detector, registered_names, registry_class
from tests.models.test_model_contract import BAD_INPUTS, bad_input

NAMES = registered_names()

#: Detectors that score without a fit (``is_fitted`` is True from the start).
NO_FIT_NEEDED = {n for n in NAMES if not registry_class(n).requires_fit}


def test_the_presets_and_flags_are_those_the_suite_was_written_with():
    # Moved from this file into the classes (``_test_config``, ``requires_fit``).
    presets = {name: registry_class(name)._test_config().to_dict() for name in NAMES}
    defaults = {name: registry_class(name).config_class().to_dict() for name in NAMES}
    assert {n for n in NAMES if presets[n] != defaults[n]} == {"arima", "lstm", "random_forest"}
    assert {k: presets["arima"][k] for k in ("max_p", "max_q", "fit_length")} == {
        "max_p": 1, "max_q": 1, "fit_length": 600}
    assert {k: presets["lstm"][k] for k in ("hidden_size", "epochs", "max_windows")} == {
        "hidden_size": 8, "epochs": 1, "max_windows": 500}
    assert {k: presets["random_forest"][k] for k in ("n_estimators", "max_depth")} == {
        "n_estimators": 10, "max_depth": 6}
    assert {n for n in NAMES if not registry_class(n).requires_fit} == {"window_baseline"}


def fresh(name: str, **overrides: Any) -> Detector:
    return make_detector(name, **{**registry_class(name)._test_config().to_dict(), **overrides})


def assert_same_scores(a: pd.Series, b: pd.Series) -> None:
    assert a.index.equals(b.index)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


def test_the_registry_is_not_empty():
    assert {"static_threshold", "dynamic_threshold", "window_baseline"} <= set(NAMES)


@pytest.fixture(scope="module", params=NAMES)
def fitted(request, fitted_on_history) -> Detector:
    """One detector per registered name, fitted once for the session; never mutate it."""
    return fitted_on_history(registry_class(request.param))


@pytest.fixture(scope="module")
def scores(fitted, window) -> pd.Series:
    return fitted.score(window)


# -- score --------------------------------------------------------------------------------
def test_scores_align_with_the_window(scores, window):
    assert isinstance(scores, pd.Series)
    assert scores.index.equals(window.index)
    assert scores.dtype == np.float64


def test_scores_lie_in_unit_interval_and_nan_where_input_is_nan(scores, window):
    missing = window.isna().to_numpy()
    values = scores.to_numpy()
    np.testing.assert_array_equal(np.isnan(values), missing)
    assert ((values[~missing] >= 0.0) & (values[~missing] <= 1.0)).all()


def test_normal_data_mostly_scores_below_the_threshold(scores):
    assert np.nanmean(scores.to_numpy() >= 0.99) < 0.10


def test_score_leaves_its_input_alone(fitted, window):
    copy = window.copy()
    fitted.score(copy)
    pd.testing.assert_series_equal(copy, window)


@pytest.mark.parametrize("k", [1, 30, 150, 287])
def test_score_is_causal_on_prefixes(fitted, window, scores, k):
    prefix = fitted.score(window.iloc[:k])
    np.testing.assert_allclose(
        prefix.to_numpy(), scores.iloc[:k].to_numpy(), rtol=1e-12, atol=1e-12
    )


def test_changing_future_points_never_changes_past_scores(fitted, window, scores):
    k = 150
    changed = window.copy()
    changed.iloc[k:] = changed.iloc[k:] * 3.0 + 100.0
    changed.iloc[k + 5] = np.nan
    after = fitted.score(changed)
    np.testing.assert_allclose(
        after.iloc[:k].to_numpy(), scores.iloc[:k].to_numpy(), rtol=1e-12, atol=1e-12
    )
    assert not np.allclose(after.iloc[k:].to_numpy(), scores.iloc[k:].to_numpy(), equal_nan=True)


def test_score_is_independent_of_index_zone_and_resolution(fitted, window, scores):
    paris = window.copy()
    paris.index = window.index.tz_convert("Europe/Paris").as_unit("s")
    moved = fitted.score(paris)
    np.testing.assert_array_equal(moved.to_numpy(), scores.to_numpy())
    assert (moved.index == window.index).all()


def test_integer_values_are_accepted(fitted, window):
    ints = window.fillna(0).round().astype("int64")
    out = fitted.score(ints)
    assert out.dtype == np.float64 and len(out) == len(ints)


def test_expected_range_brackets_and_aligns(fitted, window):
    low, high = fitted.expected_range(window)
    assert len(low) == len(high) == len(window)
    both = ~(np.isnan(low) | np.isnan(high))
    assert both.mean() > 0.8
    assert (low[both] <= high[both]).all()


def test_score_with_range_equals_score_and_expected_range(fitted, window, scores):
    # The scoring path asks for both at once; some detectors share the work between them.
    together, low, high = fitted.score_with_range(window)
    assert_same_scores(together, scores)
    expected_low, expected_high = fitted.expected_range(window)
    np.testing.assert_array_equal(low, expected_low)
    np.testing.assert_array_equal(high, expected_high)


# -- not fitted (the rest is in test_model_contract.py) -------------------------------------
@pytest.mark.parametrize("name", sorted(NO_FIT_NEEDED))
def test_a_detector_that_needs_no_fit_scores_unfitted(name, window):
    detector = fresh(name)
    assert detector.is_fitted
    out = detector.score(window)
    assert len(out) == len(window)


# -- documented bad inputs ----------------------------------------------------------------
@pytest.mark.parametrize(("kind", "error"), BAD_INPUTS)
def test_score_refuses_bad_windows(fitted, window, kind, error):
    with pytest.raises(error, match="window"):
        fitted.score(bad_input(kind, window))


def test_empty_window_is_refused(fitted, window):
    with pytest.raises(ValueError, match="window"):
        fitted.score(window.iloc[:0])


@pytest.mark.parametrize("name", NAMES)
def test_too_short_history_is_refused(name, history):
    detector = fresh(name)
    n = detector.min_history_points(pd.Timedelta("5min"))
    with pytest.raises(ValueError, match=rf"{type(detector).__name__} \({name}\) needs at "
                                         rf"least {n}$"):
        detector.fit(history.iloc[: n - 1])
    # Enough timestamps but too few values: NaN does not count as history.
    mostly_missing = history.iloc[: n + 5].copy()
    mostly_missing.iloc[:7] = np.nan
    with pytest.raises(ValueError, match="non-missing"):
        detector.fit(mostly_missing)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in NO_FIT_NEEDED])
def test_the_declared_minimum_history_is_enough_to_fit(name, history):
    detector = fresh(name)
    n = detector.min_history_points(pd.Timedelta("5min"))
    assert detector.fit(history.iloc[:n]).is_fitted
