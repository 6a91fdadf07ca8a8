"""One contract suite for every registered detector.

A detector enrols by registering: the suite is parametrised over
``models.registered_names()``. Each class carries its cheap test config
(``_test_config()``); one that needs no fit says so with ``requires_fit = False``.
The forecasters have the same suite in ``test_forecaster_contract.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models import (
    Detector,
    ModelFormatError,
    NotFittedError,
    make_detector,
    registered_names,
    registry_class,
)

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


def assert_same_state(a: Detector, b: Detector) -> None:
    params, arrays = a.get_state()
    expected_params, expected_arrays = b.get_state()
    assert params == expected_params
    assert arrays.keys() == expected_arrays.keys()
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], expected_arrays[key])


def test_the_registry_is_not_empty():
    assert {"static_threshold", "dynamic_threshold", "window_baseline"} <= set(NAMES)


@pytest.fixture(scope="module", params=NAMES)
def fitted(request, history) -> Detector:
    """One detector per registered name, fitted once for the whole module; never mutate it."""
    return fresh(request.param).fit(history)


@pytest.fixture(scope="module")
def scores(fitted, window) -> pd.Series:
    return fitted.score(window)


# -- fit ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_marks_fitted(name, history):
    detector = fresh(name)
    assert detector.is_fitted == (name in NO_FIT_NEEDED)
    assert detector.fit(history) is detector
    assert detector.is_fitted


def test_refit_equals_fresh_fit(history, window, fitted):
    # Different level, spread and no season: every piece of learned state must be replaced.
    other = pd.Series(
        np.random.default_rng(3).normal(500.0, 40.0, len(history)), index=history.index
    )
    refitted = fresh(fitted.name).fit(other).fit(history)
    assert_same_scores(refitted.score(window), fitted.score(window))
    assert_same_state(refitted, fitted)


@pytest.mark.parametrize("name", NAMES)
def test_fit_leaves_its_input_alone(name, history):
    copy = history.copy()
    fresh(name).fit(copy)
    pd.testing.assert_series_equal(copy, history)


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


# -- determinism and persistence ----------------------------------------------------------
def test_same_config_same_output(fitted, history, window, scores):
    twin = type(fitted)(type(fitted.config).from_dict(fitted.config.to_dict())).fit(history)
    assert twin.config == fitted.config
    assert_same_scores(twin.score(window), scores)


def test_config_is_json_friendly(fitted):
    as_dict = fitted.config.to_dict()
    assert type(fitted.config).from_dict(json.loads(json.dumps(as_dict))) == fitted.config


@pytest.mark.parametrize("loader", ["Detector", "own class"])
def test_save_load_gives_identical_scores(fitted, window, scores, tmp_path, loader):
    fitted.save(tmp_path / "model")
    assert (tmp_path / "model" / "config.json").is_file()
    cls = Detector if loader == "Detector" else type(fitted)
    loaded = cls.load(tmp_path / "model")
    assert type(loaded) is type(fitted)
    assert loaded.config == fitted.config
    assert loaded.is_fitted
    assert_same_scores(loaded.score(window), scores)
    assert_same_state(loaded, fitted)
    for a, b in zip(loaded.expected_range(window), fitted.expected_range(window), strict=True):
        np.testing.assert_array_equal(a, b)


def test_saved_files_are_plain_formats(fitted, tmp_path):
    fitted.save(tmp_path)
    header = json.loads((tmp_path / "config.json").read_text())
    assert header["name"] == fitted.name
    assert header["class"] == type(fitted).__name__
    assert isinstance(header["format_version"], int)
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))


def test_loading_into_another_class_is_refused(fitted, tmp_path):
    fitted.save(tmp_path)
    others = [registry_class(n) for n in NAMES if not issubclass(type(fitted), registry_class(n))]
    if not others:
        pytest.skip("only one detector class is registered")
    for cls in others:
        with pytest.raises(ModelFormatError, match=type(fitted).__name__):
            cls.load(tmp_path)


def _tamper(directory: Path, **changes: Any) -> None:
    path = directory / "config.json"
    header = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            header.pop(key)
        else:
            header[key] = value
    path.write_text(json.dumps(header))


@pytest.mark.parametrize("version", [999, "1", None])
def test_tampered_format_version_is_refused(fitted, tmp_path, version):
    fitted.save(tmp_path)
    _tamper(tmp_path, format_version=version)
    with pytest.raises(ModelFormatError, match="format_version"):
        Detector.load(tmp_path)
    with pytest.raises(ModelFormatError, match="format_version"):
        type(fitted).load(tmp_path)


def test_unknown_detector_name_is_a_format_error(fitted, tmp_path):
    fitted.save(tmp_path)
    _tamper(tmp_path, name="no_such_detector", **{"class": "NoSuchDetector"})
    with pytest.raises(ModelFormatError, match="no_such_detector"):
        Detector.load(tmp_path)


@pytest.mark.parametrize("broken", ["missing directory", "no state", "no arrays", "bad json"])
def test_unreadable_saved_detector_is_a_format_error(fitted, tmp_path, broken):
    directory = tmp_path / "model"
    if broken != "missing directory":
        fitted.save(directory)
    if broken == "no state":
        (directory / "state.json").unlink()
    elif broken == "no arrays":
        (directory / "arrays.npz").unlink()
    elif broken == "bad json":
        (directory / "config.json").write_text("{ truncated")
    with pytest.raises(ModelFormatError, match=re.escape(str(directory))):
        Detector.load(directory)


# -- not fitted ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_unfitted_detector_refuses_to_score_or_save(name, window, tmp_path):
    detector = fresh(name)
    if name in NO_FIT_NEEDED:
        assert detector.is_fitted
        out = detector.score(window)
        assert len(out) == len(window)
        return
    assert not detector.is_fitted
    with pytest.raises(NotFittedError, match="fit"):
        detector.score(window)
    with pytest.raises(NotFittedError):
        detector.expected_range(window)
    with pytest.raises(NotFittedError):
        detector.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()


# -- documented bad inputs ----------------------------------------------------------------
def _bad_input(kind: str, series: pd.Series) -> Any:
    s = series.copy()
    if kind == "ndarray":
        return s.to_numpy()
    if kind == "list":
        return s.tolist()
    if kind == "frame":
        return s.to_frame()
    if kind == "range index":
        return s.reset_index(drop=True)
    if kind == "text values":
        return s.astype(str).where(np.arange(len(s)) != 3, "high")
    if kind == "naive index":
        s.index = s.index.tz_localize(None)
        return s
    if kind == "unsorted index":
        return s.iloc[::-1]
    if kind == "duplicated index":
        index = s.index.to_numpy().copy()
        index[5] = index[4]
        s.index = pd.DatetimeIndex(index)
        return s
    if kind == "inf":
        s.iloc[20] = np.inf
        return s
    if kind == "-inf":
        s.iloc[20] = -np.inf
        return s
    raise AssertionError(kind)


BAD_INPUTS = [
    ("ndarray", TypeError),
    ("list", TypeError),
    ("frame", TypeError),
    ("range index", TypeError),
    ("text values", TypeError),
    ("naive index", ValueError),
    ("unsorted index", ValueError),
    ("duplicated index", ValueError),
    ("inf", ValueError),
    ("-inf", ValueError),
]


@pytest.mark.parametrize(("kind", "error"), BAD_INPUTS)
def test_score_refuses_bad_windows(fitted, window, kind, error):
    with pytest.raises(error, match="window"):
        fitted.score(_bad_input(kind, window))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("kind", "error"), BAD_INPUTS)
def test_fit_refuses_bad_histories(name, history, kind, error):
    detector = fresh(name)
    with pytest.raises(error, match="history"):
        detector.fit(_bad_input(kind, history))
    assert detector.is_fitted == (name in NO_FIT_NEEDED)


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


# -- config -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_field_is_named(name):
    with pytest.raises(ValueError, match="n_bogus_field"):
        make_detector(name, n_bogus_field=3)


@pytest.mark.parametrize("name", NAMES)
def test_config_fields_are_keyword_only_and_frozen(name):
    config = registry_class(name).config_class()
    fields = dataclasses.fields(config)
    assert all(f.kw_only for f in fields)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, fields[0].name, None)


def _numeric_fields(name: str) -> list[str]:
    config = registry_class(name).config_class()
    return [
        f.name
        for f in dataclasses.fields(config)
        if isinstance(getattr(config, f.name), int | float)
        and not isinstance(getattr(config, f.name), bool)
    ]


@pytest.mark.parametrize(("name", "field"), [(n, f) for n in NAMES for f in _numeric_fields(n)])
def test_absurd_numeric_hyperparameter_is_refused_naming_the_field(name, field):
    with pytest.raises(ValueError, match=field):
        make_detector(name, **{field: -(10**9)})


def test_wrong_config_class_is_a_type_error():
    static, dynamic = registry_class("static_threshold"), registry_class("dynamic_threshold")
    with pytest.raises(TypeError, match=static.config_class.__name__):
        static(dynamic.config_class())
