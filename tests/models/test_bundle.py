"""Tests of the detector bundle: scoring known and unseen series, persistence, bad bundles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models import (
    DynamicThresholdDetector,
    ModelFormatError,
    NotFittedError,
    StaticThresholdDetector,
    WindowBaselineDetector,
    make_detector,
)
from models.alarms import ALARM_THRESHOLD
from models.base import FORMAT_VERSION
from models.bundle import DEFAULT_DETECTORS, DetectorBundle, SeriesScores, combine, fit_available

KNOWN = ("checkout", "cpu")
OTHER = ("search", "latency")
NAMES = ["dynamic_threshold", "static_threshold"]


@pytest.fixture(scope="module")
def bundle(history) -> DetectorBundle:
    detectors = {
        KNOWN: {name: make_detector(name).fit(history) for name in NAMES},
        OTHER: {"static_threshold": make_detector("static_threshold").fit(history * 2.0)},
    }
    return DetectorBundle(detectors, metadata={"step": "5min", "trained_until": "2026-01-08"})


@pytest.fixture
def spiky(window) -> pd.Series:
    out = window.copy()
    out.iloc[150] += 40.0
    return out


def test_bundle_lists_its_series_and_detectors(bundle):
    assert bundle.series == sorted([KNOWN, OTHER])
    assert bundle.detector_names == NAMES
    assert KNOWN in bundle and ("nobody", "cpu") not in bundle


def test_known_series_scores_with_every_detector_and_combines_them(bundle, spiky):
    result = bundle.score(*KNOWN, spiky)
    assert isinstance(result, SeriesScores)
    assert result.known_series is True
    assert sorted(result.detector_scores) == NAMES
    for name in NAMES:
        own = bundle.detectors[KNOWN][name].score(spiky).to_numpy()
        np.testing.assert_array_equal(result.detector_scores[name], own)
    missing = spiky.isna().to_numpy()
    np.testing.assert_array_equal(result.score, combine(result.detector_scores))
    assert np.isnan(result.score[missing]).all()
    assert result.index.equals(spiky.index)
    np.testing.assert_array_equal(result.values, spiky.to_numpy())
    assert 150 in result.anomalous()
    assert result.score[150] >= 0.99


def test_known_series_expected_range_comes_from_the_dynamic_detector(bundle, spiky):
    result = bundle.score(*KNOWN, spiky)
    low, high = bundle.detectors[KNOWN]["dynamic_threshold"].expected_range(spiky)
    np.testing.assert_array_equal(result.expected_low, low)
    np.testing.assert_array_equal(result.expected_high, high)


def test_a_subset_of_detectors_can_be_asked_for(bundle, spiky):
    result = bundle.score(*KNOWN, spiky, detectors=["static_threshold"])
    assert list(result.detector_scores) == ["static_threshold"]
    np.testing.assert_array_equal(result.score, result.detector_scores["static_threshold"])
    # Without the dynamic detector, the range is the static bounds.
    static = bundle.detectors[KNOWN]["static_threshold"]
    assert (result.expected_high == static.upper_).all()


def test_unknown_detector_is_named(bundle, spiky):
    with pytest.raises(ValueError, match="lstm") as error:
        bundle.score(*KNOWN, spiky, detectors=["static_threshold", "lstm"])
    assert "checkout/cpu" in str(error.value)
    # A detector another series has is still unknown for this one.
    with pytest.raises(ValueError, match="dynamic_threshold"):
        bundle.score(*OTHER, spiky, detectors=["dynamic_threshold"])


def test_unseen_series_falls_back_to_the_window_baseline(bundle, spiky):
    result = bundle.score("newcomer", "cpu", spiky)
    assert result.known_series is False
    assert list(result.detector_scores) == ["window_baseline"]
    expected = WindowBaselineDetector().score(spiky).to_numpy()
    np.testing.assert_array_equal(result.detector_scores["window_baseline"], expected)
    np.testing.assert_array_equal(result.score, expected)
    low, _ = WindowBaselineDetector().expected_range(spiky)
    np.testing.assert_array_equal(result.expected_low, low)
    assert result.score[150] >= 0.99


def test_a_series_is_known_by_service_and_metric_together(bundle, spiky):
    # The service exists, the metric does not: that series was never trained.
    assert bundle.score("checkout", "latency", spiky).known_series is False


def test_bundle_score_validates_the_window(bundle, window):
    naive = window.copy()
    naive.index = naive.index.tz_localize(None)
    with pytest.raises(ValueError, match="timezone"):
        bundle.score(*KNOWN, naive)
    with pytest.raises(TypeError):
        bundle.score("newcomer", "cpu", window.to_numpy())


def test_save_load_round_trip_gives_identical_scores(bundle, spiky, tmp_path):
    bundle.save(tmp_path / "bundle")
    loaded = DetectorBundle.load(tmp_path / "bundle")
    assert loaded.series == bundle.series
    assert loaded.detector_names == bundle.detector_names
    assert loaded.metadata == bundle.metadata
    assert isinstance(loaded.detectors[KNOWN]["dynamic_threshold"], DynamicThresholdDetector)
    assert isinstance(loaded.detectors[OTHER]["static_threshold"], StaticThresholdDetector)
    for key in (KNOWN, OTHER, ("newcomer", "cpu")):
        before, after = bundle.score(*key, spiky), loaded.score(*key, spiky)
        np.testing.assert_array_equal(after.score, before.score)
        assert after.detector_scores.keys() == before.detector_scores.keys()
        np.testing.assert_array_equal(after.expected_low, before.expected_low)
        assert after.known_series == before.known_series


def _saved(bundle, tmp_path):
    path = bundle.save(tmp_path / "bundle")
    return path, path / "bundle.json"


def test_broken_manifest_is_a_format_error(bundle, tmp_path):
    path, manifest = _saved(bundle, tmp_path)
    manifest.write_text('{"format_version": 1, "series": [')
    with pytest.raises(ModelFormatError, match=r"bundle\.json"):
        DetectorBundle.load(path)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, None])
def test_unknown_bundle_format_version_is_a_format_error(bundle, tmp_path, version):
    path, manifest = _saved(bundle, tmp_path)
    content = json.loads(manifest.read_text())
    content["format_version"] = version
    manifest.write_text(json.dumps(content))
    with pytest.raises(ModelFormatError, match="format_version"):
        DetectorBundle.load(path)


def test_missing_bundle_is_a_format_error(tmp_path):
    with pytest.raises(ModelFormatError):
        DetectorBundle.load(tmp_path / "absent")


def test_missing_detector_folder_is_a_format_error(bundle, tmp_path):
    path, manifest = _saved(bundle, tmp_path)
    entry = json.loads(manifest.read_text())["series"][0]
    for file in (path / entry["path"] / entry["detectors"][0]).iterdir():
        file.unlink()
    with pytest.raises(ModelFormatError):
        DetectorBundle.load(path)


def test_bundle_refuses_unfitted_or_empty_series(history):
    with pytest.raises(NotFittedError, match="static_threshold"):
        DetectorBundle({KNOWN: {"static_threshold": StaticThresholdDetector()}})
    with pytest.raises(ValueError, match="checkout/cpu"):
        DetectorBundle({KNOWN: {}})


def test_combine_is_the_geometric_mean_of_tail_probabilities_where_nan_abstains():
    out = combine(
        {
            "a": np.array([0.9, np.nan, np.nan, 0.99, 1.0]),
            "b": np.array([0.99, 0.9, np.nan, 0.0, 1.0]),
            "c": np.array([0.999, 0.99, np.nan, 0.0, 1.0]),
        }
    )
    # Tail probabilities 0.1, 0.01, 0.001 -> geometric mean 0.01; NaN abstains; a score of
    # exactly 1 stays finite and below 1 only by the floor of 1e-15.
    np.testing.assert_allclose(out[[0, 1]], [0.99, 1 - np.sqrt(0.1 * 0.01)])
    assert np.isnan(out[2])
    np.testing.assert_allclose(out[3], 1 - 0.01 ** (1 / 3))
    assert 1 - 1e-14 < out[4] <= 1.0


def test_agreement_adds_up_and_one_sure_detector_alone_does_not_page():
    agreeing = combine({"a": np.array([0.999]), "b": np.array([0.999])})
    alone = combine({"a": np.array([0.999]), "b": np.array([0.5])})
    assert agreeing[0] == pytest.approx(0.999)
    assert alone[0] < 0.99


def test_one_detector_alone_is_its_own_ensemble():
    alone = combine({"a": np.array([0.2, 0.99])})
    np.testing.assert_allclose(alone, [0.2, 0.99])


def test_anomalous_positions_never_include_nan():
    index = pd.date_range("2026-01-05T00:00Z", periods=4, freq="5min")
    empty = np.zeros(4)
    scores = SeriesScores(
        index=index,
        values=empty,
        score=np.array([0.995, np.nan, 0.5, 0.99]),
        detector_scores={},
        expected_low=empty,
        expected_high=empty,
        known_series=True,
    )
    assert scores.anomalous(threshold=0.99).tolist() == [0, 3]
    assert scores.anomalous(threshold=0.995).tolist() == [0]
    # By default, what the service pages at.
    assert scores.anomalous().tolist() == scores.anomalous(threshold=ALARM_THRESHOLD).tolist() == []


# -- short histories: the detectors that have enough data ------------------------------------
def minutes(n_points: int, seed: int = 0) -> pd.Series:
    """A new series: ``n_points`` of noisy CPU share at a 1-minute step."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-01-05T09:00Z", periods=n_points, freq="1min")
    return pd.Series(0.4 + 0.02 * rng.standard_normal(n_points), index=index)


def test_each_default_detector_declares_its_need_at_the_shipped_settings():
    step = pd.Timedelta("1min")
    needs = {name: make_detector(name).min_history_points(step) for name in DEFAULT_DETECTORS}
    assert needs == {"static_threshold": 2, "dynamic_threshold": 10, "arima": 30,
                     "random_forest": 24 + 30}  # 24 points of past (rolling_lengths), then 30 rows
    for name, n in needs.items():
        assert make_detector(name).fit(minutes(n)).is_fitted


@pytest.mark.parametrize(("n_points", "expected"), [
    (9, []),
    (10, ["dynamic_threshold", "static_threshold"]),
    (29, ["dynamic_threshold", "static_threshold"]),
    (30, ["arima", "dynamic_threshold", "static_threshold"]),
    (54, ["arima", "dynamic_threshold", "random_forest", "static_threshold"]),
])
def test_a_short_series_gets_the_detectors_it_has_enough_data_for(n_points, expected):
    fit = fit_available(minutes(n_points))
    assert sorted(fit.detectors) == expected
    assert fit.trained == bool(expected)
    assert (fit.n_points, fit.step) == (n_points, pd.Timedelta("1min"))
    assert fit.short == sorted(n for n in DEFAULT_DETECTORS
                               if fit.needs[n] > n_points)
    assert fit.errors == {}
    if fit.trained:
        scored = DetectorBundle({KNOWN: fit.detectors}).score(*KNOWN, minutes(120, seed=1))
        assert scored.known_series and sorted(scored.detector_scores) == expected


def test_one_detector_alone_is_not_a_partial_set_unless_it_is_all_that_was_asked():
    # Nine points are enough for the static threshold only: alone it would be its own
    # ensemble, paging on every value outside nine minutes of history.
    assert fit_available(minutes(9)).detectors == {}
    alone = fit_available(minutes(9), ["static_threshold"])
    assert list(alone.detectors) == ["static_threshold"] and alone.short == []


def test_a_detector_with_enough_points_whose_fit_fails_is_reported_and_the_rest_kept():
    history = minutes(90)
    for start in (20, 40, 60):  # gaps longer than fill_limit cut the forest's contexts short
        history.iloc[start:start + 4] = np.nan
    fit = fit_available(history)
    assert sorted(fit.detectors) == ["arima", "dynamic_threshold", "static_threshold"]
    assert fit.short == [] and list(fit.errors) == ["random_forest"]
    assert "RandomForestDetector needs at least 30" in fit.errors["random_forest"]


def test_a_series_step_is_known_from_its_fitted_models_and_kept_on_save(bundle, history,
                                                                        tmp_path):
    step = history.index[1] - history.index[0]
    assert bundle.trained_step(*KNOWN) == step  # from the dynamic threshold
    assert bundle.trained_step(*OTHER) is None  # a static threshold keeps no step
    assert bundle.trained_step("newcomer", "cpu") is None
    assert DetectorBundle.load(bundle.save(tmp_path / "b")).trained_step(*KNOWN) == step
    arima = make_detector("arima").fit(history)
    assert arima.trained_step == step
    assert type(arima).load(arima.save(tmp_path / "arima")).trained_step == step
