"""A trained fleet: one set of detectors per series, scored together.

The bundle is what training produces, MLflow stores and serving loads. It is
plain files: ``bundle.json`` lists the series and their detectors, and each
detector is saved in its own folder by :meth:`Detector.save`.

The module stays whole: the fitting helpers, the ensemble rule and the bundle
are the one scoring path every caller shares, and read best together.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from models.alarms import ALARM_THRESHOLD
from models.base import (
    FORMAT_VERSION,
    Detector,
    NotFittedError,
    check_format,
    check_series,
    history_step,
    make_detector,
    package_version,
    read_json,
)
from models.contract import Model
from models.correlation import CorrelationDetector
from models.forecast import Forecaster, SeasonalNaiveForecaster
from models.score_cache import ScoreCache, score_detector
from models.thresholds import WindowBaselineDetector

SeriesKey = tuple[str, str]

#: What a series the bundle has never seen is scored with (see :meth:`DetectorBundle.score`).
FALLBACK_DETECTOR = WindowBaselineDetector.name


@dataclasses.dataclass
class SeriesScores:
    """Scores of one window.

    ``score`` is the ensemble score per point (see :func:`combine`): the
    geometric mean of the detectors' tail probabilities.
    """

    index: pd.DatetimeIndex
    values: np.ndarray
    score: np.ndarray
    detector_scores: dict[str, np.ndarray]
    expected_low: np.ndarray
    expected_high: np.ndarray
    known_series: bool

    def anomalous(self, threshold: float = ALARM_THRESHOLD) -> np.ndarray:
        """Positions whose combined score reaches ``threshold`` (NaN never does).

        The default is the alarm policy's: what the service pages at.
        """
        return np.flatnonzero(np.nan_to_num(self.score, nan=0.0) >= threshold)


class SeriesForecast(NamedTuple):
    """A forecast of one series and where it came from."""

    frame: pd.DataFrame  # yhat, q10, q50, q90 indexed by the future timestamps
    forecaster: str
    known_series: bool
    note: str | None


#: The per-series detectors trained by default; all four vote in the ensemble (see :func:`combine`).
DEFAULT_DETECTORS = ("static_threshold", "dynamic_threshold", "arima", "random_forest")

#: Detectors that report beside the ensemble but do not vote in it (none today).
NON_VOTING: frozenset[str] = frozenset()


def combine(scores: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ensemble score: the geometric mean of the detectors' tail probabilities.

    Each calibrated score ``s`` is a tail probability ``1 − s`` ("this rare in
    training"); the ensemble's tail probability is their geometric mean, so
    the ensemble is as sure as the detectors are *on average in surprise*
    (``−log(1 − s)``): one detector alone cannot page unless it is very sure,
    and agreement between detectors adds up. The static threshold stays below
    0.99 inside the range history has seen, which makes the ensemble
    reluctant to page such a value, however a model's prediction missed it.
    Detectors in ``NON_VOTING`` take part only when no other detector is
    present. NaN scores abstain; a point where every detector abstains is NaN.

    Unlike a majority vote, the geometric mean keeps how sure each detector
    is rather than one yes or no per detector, so weak evidence from several
    detectors adds up, and a detector that finds the point ordinary (the
    static threshold inside the seen range) holds a page back. Measurements
    against the vote: benchmarks/README.md, "Detection on NAB" and "Detection
    on the synthetic fleet".
    """
    voters = {n: v for n, v in scores.items() if n not in NON_VOTING} or dict(scores)
    stacked = np.vstack([np.asarray(v, dtype="float64") for v in voters.values()])
    if stacked.shape[0] == 1:  # its own ensemble, exactly (no round trip through the log)
        return stacked[0].copy()
    surprise = -np.log1p(-np.clip(stacked, 0.0, 1.0 - _SMALLEST_TAIL))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, handled below
        mean = np.nanmean(surprise, axis=0)
    combined = -np.expm1(-mean)
    combined[np.isnan(stacked).all(axis=0)] = np.nan
    return combined


#: Sub-folder of a series' folder holding its forecaster.
_FORECASTER_FOLDER = "forecaster"

#: Tail probabilities are floored here before the log, so that a score of exactly 1 stays finite.
_SMALLEST_TAIL = 1e-15


def fit_series(
    history: pd.Series,
    detector_names: Sequence[str] = DEFAULT_DETECTORS,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Detector]:
    """Fit every named detector on one series' history."""
    configs = configs or {}
    return {
        name: make_detector(name, **dict(configs.get(name, {}))).fit(history)
        for name in detector_names
    }


#: Fewest detectors a series is trained with when its history is too short for some of the
#: ones asked for (unless fewer were asked): a detector alone is its own ensemble, so one fitted
#: on a few minutes of history would page on every value those minutes did not hold.
MIN_PARTIAL_DETECTORS = 2


@dataclasses.dataclass
class SeriesFit:
    """The detectors :func:`fit_available` fitted on one series, and why the others were not.

    ``needs`` holds every asked detector's :meth:`~models.base.Detector.min_history_points`
    at the series' ``step`` (None below two points); ``n_points`` counts the history's
    non-missing points; ``errors`` are the fit errors of detectors that had enough points
    (gaps can still cut their contexts short). ``detectors`` is empty when the series is
    not trained.
    """

    detectors: dict[str, Detector]
    needs: dict[str, int]
    errors: dict[str, str]
    n_points: int
    step: pd.Timedelta | None

    @property
    def trained(self) -> bool:
        return bool(self.detectors)

    @property
    def short(self) -> list[str]:
        """The asked detectors this history is too short for, by name."""
        return sorted(name for name, need in self.needs.items() if self.n_points < need)

    @property
    def n_required(self) -> int:
        """Fitted detectors a series needs to be trained (see ``MIN_PARTIAL_DETECTORS``)."""
        return min(MIN_PARTIAL_DETECTORS, len(self.needs))


def fit_available(
    history: pd.Series,
    detector_names: Sequence[str] = DEFAULT_DETECTORS,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> SeriesFit:
    """Fit, on one series' history, every named detector it holds enough points for.

    A new series is trained with a partial set as soon as ``MIN_PARTIAL_DETECTORS`` of the
    detectors (or all of them, when fewer are asked) can be fitted, and gets the others
    when a later training run has the points they need; until then it is not trained and
    the bundle scores it with the window baseline, as any unseen series.

    Raises
    ------
    TypeError, ValueError
        ``history`` is not a valid series (see :func:`models.base.check_series`).
    """
    values = check_series(history, name="history")
    step = history_step(values.index)
    n_points = int(values.notna().sum())
    configs = configs or {}
    unfitted = {name: make_detector(name, **dict(configs.get(name, {})))
                for name in detector_names}
    needs = {name: detector.min_history_points(step) for name, detector in unfitted.items()}
    fit = SeriesFit({}, needs, {}, n_points, step)
    if sum(n_points >= need for need in needs.values()) < fit.n_required:
        return fit
    for name, detector in unfitted.items():
        if n_points < needs[name]:
            continue
        try:
            fit.detectors[name] = detector.fit(values)
        except ValueError as error:
            fit.errors[name] = str(error)
    if len(fit.detectors) < fit.n_required:
        fit.detectors.clear()
    return fit


class DetectorBundle:
    """Detectors per ``(service, metric)``, plus a fallback for series never seen.

    Parameters
    ----------
    detectors
        ``{(service, metric): {detector_name: fitted detector}}``.
    metadata
        Free JSON-friendly facts about the training (data range, step, ...).
    """

    def __init__(
        self,
        detectors: Mapping[SeriesKey, Mapping[str, Detector]],
        metadata: dict[str, Any] | None = None,
        service_detectors: Mapping[str, CorrelationDetector] | None = None,
        forecasters: Mapping[SeriesKey, Forecaster] | None = None,
    ) -> None:
        for key, by_name in detectors.items():
            if not by_name:
                raise ValueError(f"series {key[0]}/{key[1]} has no detectors")
            for name, detector in by_name.items():
                if not detector.is_fitted:
                    raise NotFittedError(f"detector {name} of {key[0]}/{key[1]} is not fitted")
        self.detectors = {key: dict(by_name) for key, by_name in detectors.items()}
        #: Multi-metric detectors by service (only services whose metrics explain each other).
        self.service_detectors = dict(service_detectors or {})
        #: The forecaster chosen for each series by backtest (see models.backtest).
        self.forecasters = dict(forecasters or {})
        for key, forecaster in self.forecasters.items():
            if not forecaster.is_fitted:
                raise NotFittedError(f"forecaster of {key[0]}/{key[1]} is not fitted")
        self.metadata = dict(metadata or {})
        self.fallback = WindowBaselineDetector()
        # What a score cache keys this bundle's scores by: a new bundle (a model swap) misses.
        self.token = uuid.uuid4().hex

    @property
    def series(self) -> list[SeriesKey]:
        return sorted(self.detectors)

    @property
    def detector_names(self) -> list[str]:
        return sorted({name for by_name in self.detectors.values() for name in by_name})

    def model_classes(self) -> set[type[Model]]:
        """The class of every model the bundle holds (an ensemble's members included).

        What a caller reads capabilities from, e.g. whether loading the bundle needs torch.
        """
        found: set[type[Model]] = set()
        pending: list[Model] = [
            *(d for by_name in self.detectors.values() for d in by_name.values()),
            *self.forecasters.values(),
            *self.service_detectors.values(),
            self.fallback,
        ]
        while pending:
            model = pending.pop()
            found.add(type(model))
            pending.extend(model.parts())
        return found

    def __contains__(self, key: SeriesKey) -> bool:
        return key in self.detectors

    def trained_step(self, service: str, metric: str) -> pd.Timedelta | None:
        """The sampling step a series' models were fitted at; None when none of them keeps it.

        Windows and histories of the series must come at this step: detectors count
        their lags and seasons in points.
        """
        key = (service, metric)
        if key in self.forecasters:
            return self.forecasters[key].step_
        steps = (d.trained_step for d in self.detectors.get(key, {}).values())
        return next((step for step in steps if step is not None), None)

    def max_horizon(self, service: str, metric: str) -> int | None:
        """The longest forecast a series' trained forecaster serves; None without one."""
        forecaster = self.forecasters.get((service, metric))
        return None if forecaster is None else forecaster.config.max_horizon

    def _selected(
        self, service: str, metric: str, detectors: Iterable[str] | None
    ) -> dict[str, Detector]:
        """The detectors that score a series: those named (all by default), or the fallback."""
        key = (service, metric)
        if key not in self.detectors:
            return {FALLBACK_DETECTOR: self.fallback}
        available = self.detectors[key]
        chosen = list(detectors) if detectors else sorted(available)
        unknown = [n for n in chosen if n not in available]
        if unknown:
            raise ValueError(
                f"detector(s) {unknown} not trained for {service}/{metric}; "
                f"available: {sorted(available)}"
            )
        return {name: available[name] for name in chosen}

    def context_points(
        self, service: str, metric: str, detectors: Iterable[str] | None = None
    ) -> int:
        """Rows of past a point's ensemble score depends on: the most any selected detector reads.

        Raises
        ------
        ValueError
            ``detectors`` names a detector this series does not have.
        """
        return max(d.context_points() for d in self._selected(service, metric, detectors).values())

    def score(
        self,
        service: str,
        metric: str,
        window: pd.Series,
        detectors: Iterable[str] | None = None,
        cache: ScoreCache | None = None,
    ) -> SeriesScores:
        """Score one window of a series.

        A series the bundle has never seen is scored by the window baseline
        (its own recent past) and reported with ``known_series=False``. A
        point with :meth:`context_points` rows before it in the window scores
        the same as in any longer window; ``cache`` reuses the scores of such
        points from the last window of the series it scored, with the same
        result as without it.

        Raises
        ------
        ValueError
            ``detectors`` names a detector this series does not have.
        """
        key = (service, metric)
        selected = self._selected(service, metric, detectors)
        # The expected range comes from a detector that provides one at every point (the first
        # by name when several do: the seasonal one before the window baseline), else the first.
        ranged = min(
            (n for n, d in selected.items() if d.provides_expected_range),
            default=next(iter(selected)),
        )
        detector_scores = {}
        for name, detector in selected.items():
            if cache is None:
                scores, *bounds = score_detector(detector, window, name == ranged)
            else:
                scores, *bounds = cache.score((self.token, service, metric, name), detector,
                                              window, name == ranged)
            if name == ranged:
                low, high = bounds
            detector_scores[name] = scores
        return SeriesScores(
            index=window.index,
            values=window.to_numpy(dtype="float64"),
            score=combine(detector_scores),
            detector_scores=detector_scores,
            expected_low=low,
            expected_high=high,
            known_series=key in self.detectors,
        )

    def forecast(self, service: str, metric: str, horizon: int,
                 history: pd.Series | None = None) -> SeriesForecast:
        """Forecast ``horizon`` steps after ``history`` (default: after the training data).

        A series without a trained forecaster is forecast by a seasonal naive
        model fitted on ``history`` itself; the result's ``note`` says so.

        Raises
        ------
        ValueError
            An unknown series without ``history``, a history too short for the
            fallback, or a horizon beyond what the trained model serves.
        """
        forecaster = self.forecasters.get((service, metric))
        if forecaster is not None:
            return SeriesForecast(forecaster.forecast(horizon, history), forecaster.name, True, None)
        if history is None:
            raise ValueError(f"no forecaster is trained for {service}/{metric}; send its history "
                             "(timestamps and values) to forecast from it")
        fallback = SeasonalNaiveForecaster(
            SeasonalNaiveForecaster.config_class(max_horizon=max(horizon, 1))).fit(history)
        season = {"none": "no daily or weekly cycle found (two days of history are needed to "
                          "find one): the last value is repeated",
                  "1D": "the value one day before is repeated"}.get(
            fallback.season_, "the value one week before is repeated")
        note = (f"no forecaster is trained for {service}/{metric}: a seasonal naive model "
                f"fitted on the {len(history)} points sent; {season}")
        return SeriesForecast(fallback.forecast(horizon), fallback.name, False, note)

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, key in enumerate(self.series):
            folder = f"series/{i:05d}"
            for name, detector in sorted(self.detectors[key].items()):
                detector.save(path / folder / name)
            entry = {"service": key[0], "metric": key[1], "path": folder,
                     "detectors": sorted(self.detectors[key])}
            if key in self.forecasters:
                self.forecasters[key].save(path / folder / _FORECASTER_FOLDER)
                entry["forecaster"] = self.forecasters[key].name
            entries.append(entry)
        services = []
        for i, (service, detector) in enumerate(sorted(self.service_detectors.items())):
            folder = f"services/{i:05d}/{detector.name}"
            detector.save(path / folder)
            services.append({"service": service, "detector": detector.name, "path": folder})
        manifest = {
            "format_version": FORMAT_VERSION,
            "package_version": package_version(),
            "metadata": self.metadata,
            "series": entries,
            "services": services,
        }
        (path / "bundle.json").write_text(json.dumps(manifest, indent=2, default=str))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> DetectorBundle:
        path = Path(directory)
        manifest_path = path / "bundle.json"
        manifest = read_json(manifest_path, "a detector bundle")
        check_format(manifest, manifest_path)
        detectors, forecasters = {}, {}
        for entry in manifest["series"]:
            key = (entry["service"], entry["metric"])
            detectors[key] = {
                name: Detector.load(path / entry["path"] / name) for name in entry["detectors"]
            }
            if entry.get("forecaster"):
                forecasters[key] = Forecaster.load(path / entry["path"] / _FORECASTER_FOLDER)
        service_detectors = {
            entry["service"]: CorrelationDetector.load(path / entry["path"])
            for entry in manifest.get("services", [])
        }
        return cls(detectors, manifest.get("metadata"), service_detectors, forecasters)
