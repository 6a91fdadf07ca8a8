"""Forecasters: how much load is coming, with quantiles.

Every forecaster has a frozen config dataclass, ``fit(history)`` returning
self, learned state in attributes ending in ``_``, and
``forecast(horizon, history=None)`` returning a frame indexed by the
``horizon`` timestamps after the last point of ``history`` (or of the fitted
history) with columns ``yhat`` (point forecast), ``q10``, ``q50``, ``q90``.
``history`` is the recent past the forecast starts from, so one fitted model
serves a rolling origin without refitting (what the backtest and the API do).
Persistence writes ``config.json``, ``state.json`` and ``arrays.npz``;
nothing is pickled.

- :class:`SeasonalNaiveForecaster` repeats the last season (the value one
  day, or one week, before); the baseline every result is compared with.
- :class:`RandomForestForecaster` predicts every step of the horizon at once
  (direct multi-step) from the recent values, the seasonal profile at the
  target, the value one season before it, its time of day and the distance
  ahead; its quantiles are out-of-bag residual quantiles by distance ahead.
- :class:`MedianEnsembleForecaster` takes, step by step and column by column,
  the median of several forecasters' forecasts: on NAB's CloudWatch series
  it is more accurate than any of its members, whose errors differ.
- :class:`ArimaForecaster` removes a seasonal profile (median per slot of the
  day or week, as the dynamic threshold learns it), fits an ARIMA on what
  remains (statsmodels; order by AIC over a small grid) and forecasts the
  profile plus the ARIMA's forecast: a seasonal ARIMA whose seasonality is
  deterministic, which fits in a second where a SARIMA with a 288-step season
  takes minutes.
- :class:`models.lstm_forecast.LstmForecaster` (``"lstm"``, its own module so
  that torch stays out of this one): an LSTM encoder and a decoder shared by
  all distances ahead predict the three quantiles of every step as offsets
  from the smoothed seasonal naive value; one global network can serve many
  series (:func:`models.lstm_forecast.fit_global`).

Seasonality (none, daily, weekdays/weekends, weekly) is detected from the
data with :func:`models.thresholds.detect_season`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy.stats import norm

from models.base import (
    DetectorConfig,
    ModelFormatError,
    NotFittedError,
    check_int,
    check_series,
    history_step,
    read_model_files,
    write_model_files,
)
from models.thresholds import detect_season, seasonal_profile, slot_index, slot_length_ns

#: The quantiles every forecast carries, and their column names.
QUANTILES = (0.1, 0.5, 0.9)
QUANTILE_COLUMNS = ("q10", "q50", "q90")
FORECAST_COLUMNS = ("yhat", *QUANTILE_COLUMNS)
_DAY = pd.Timedelta(days=1)
_WEEK = pd.Timedelta(days=7)
#: Seasons (see detect_season) and the period of the seasonal naive forecast for each.
_NAIVE_PERIOD = {"none": None, "1D": _DAY, "workweek": _WEEK, "7D": _WEEK}


#: Distance-ahead buckets of empirical forecast quantiles (upper bounds, in steps).
_HORIZON_BUCKETS = np.array([1, 3, 12, 48, 144, 288, 1008, 2016, 10**9])


def regular_grid(series: pd.Series, step: pd.Timedelta) -> pd.Series:
    """``series`` on a regular grid of ``step`` ending at its last point; missing steps are NaN.

    Points off the grid (jitter) are assigned to the nearest grid step; two
    points in one step are averaged.
    """
    end = series.index[-1]
    offsets = np.rint((end - series.index) / step).astype("int64")
    n = int(offsets.max()) + 1
    grid = pd.date_range(end=end, periods=n, freq=step)
    values = pd.Series(series.to_numpy(), index=n - 1 - offsets).groupby(level=0).mean()
    return pd.Series(values.reindex(range(n)).to_numpy(), index=grid, name=series.name)


def future_index(last: pd.Timestamp, step: pd.Timedelta, horizon: int) -> pd.DatetimeIndex:
    return pd.date_range(last + step, periods=horizon, freq=step)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ForecasterConfig(DetectorConfig):
    """Base of every forecaster config: hyperparameters only, all defaulted, JSON-friendly.

    ``season``: ``auto`` (detected from the data), or one of ``none``, ``1D``,
    ``workweek``, ``7D``. ``max_horizon``: the longest forecast, in steps,
    the model is asked for (longer horizons are refused).
    """

    season: str = "auto"
    max_horizon: int = 2016

    def __post_init__(self) -> None:
        if self.season not in ("auto", *_NAIVE_PERIOD):
            raise ValueError(f"season={self.season!r}; accepted: auto, {', '.join(_NAIVE_PERIOD)}")
        check_int("max_horizon", self.max_horizon, 1, 100_000)


class Forecaster(ABC):
    """Base of every forecaster; see the module docstring for the contract."""

    name: ClassVar[str]
    config_class: ClassVar[type[ForecasterConfig]] = ForecasterConfig
    #: Fewest points ``fit`` accepts.
    min_history_length: ClassVar[int] = 10

    def __init__(self, config: ForecasterConfig | None = None) -> None:
        config = config or self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        self.config = config

    def fit(self, history: pd.Series) -> Self:
        """Learn from ``history`` (a float Series on a UTC index; NaN marks gaps)."""
        grid = self._prepare(history)
        self._fit(grid)
        self._remember(grid)
        return self

    def min_history_points(self, step: pd.Timedelta | None = None) -> int:
        """Fewest finite history points ``fit`` accepts with this config, at ``step``.

        As :meth:`models.base.Detector.min_history_points`: for a history without
        gaps; ``step`` matters to a model whose config fixes a season.
        """
        return self.min_history_length

    def _prepare(self, history: pd.Series, name: str = "history") -> pd.Series:
        """``history`` checked and on its regular grid; sets ``step_`` and ``season_``."""
        values = check_series(history, name=name)
        step = history_step(values.index)
        needed = self.min_history_points(step)
        n_finite = int(np.isfinite(values.to_numpy()).sum())
        if n_finite < needed:
            raise ValueError(f"{name} has {n_finite} finite values; {self.name} needs at least "
                             f"{needed}")
        self.step_ = step
        grid = regular_grid(values, self.step_)
        self.season_ = (detect_season(grid, self.step_) if self.config.season == "auto"
                        else self.config.season)
        return grid

    def _remember(self, grid: pd.Series) -> None:
        """Keep the end of the fitted history: the default origin of a forecast."""
        self.last_ = grid.index[-1]
        self.context_ = _fill_trailing_gap(grid).iloc[-self.context_length():].to_numpy()

    def forecast(self, horizon: int, history: pd.Series | None = None) -> pd.DataFrame:
        """``yhat, q10, q50, q90`` for the ``horizon`` steps after ``history`` (default: the fit's)."""
        self._check_fitted()
        check_int("horizon", horizon, 1, self.config.max_horizon)
        if history is None:
            grid = pd.Series(self.context_, index=pd.date_range(
                end=self.last_, periods=len(self.context_), freq=self.step_))
        else:
            values = check_series(history, name="history", min_length=1)
            if not np.isfinite(values.to_numpy()).any():
                raise ValueError("history holds no finite value to forecast from")
            grid = _fill_trailing_gap(regular_grid(values, self.step_)).iloc[
                -self.context_length():]
        index = future_index(grid.index[-1], self.step_, horizon)
        frame = self._forecast(grid, index)
        # Quantiles never cross, whatever a model's error distribution.
        frame[list(QUANTILE_COLUMNS)] = np.sort(frame[list(QUANTILE_COLUMNS)].to_numpy(), axis=1)
        return frame[list(FORECAST_COLUMNS)]

    # -- what subclasses provide --------------------------------------------------------
    @abstractmethod
    def _fit(self, grid: pd.Series) -> None: ...

    @abstractmethod
    def _forecast(self, context: pd.Series, index: pd.DatetimeIndex) -> pd.DataFrame: ...

    @abstractmethod
    def context_length(self) -> int:
        """Points of recent history a forecast needs."""

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        return None

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "last_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(history) first")

    @property
    def period_steps(self) -> int:
        """Steps in one season (1 when there is none)."""
        period = _NAIVE_PERIOD[self.season_]
        return 1 if period is None else max(1, int(period / self.step_))

    # -- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        path = Path(directory)
        params, arrays = self.get_state()
        params = {**params, "step_ns": int(self.step_.value), "season": self.season_,
                  "last": self.last_.isoformat()}
        write_model_files(path, self.name, type(self).__name__, self.config.to_dict(), params,
                          {"context": self.context_, **arrays})
        self._save_files(path)
        return path

    def _save_files(self, directory: Path) -> None:
        """Write state that is not plain arrays (a forest); default: nothing."""
        return None

    def _load_files(self, directory: Path) -> None:
        """Read what ``_save_files`` wrote; default: nothing."""
        return None

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        path = Path(directory)
        saved, params, arrays = read_model_files(path, "a saved forecaster")
        target = FORECASTERS.get(saved.get("name", "?"))
        if target is None or not issubclass(target, cls):
            raise ModelFormatError(f"{path} holds {saved.get('name')!r}, not a {cls.__name__}")
        try:
            model = target(target.config_class.from_dict(saved["config"]))
            model.step_ = pd.Timedelta(int(params.pop("step_ns")), unit="ns")
            model.season_ = params.pop("season")
            model.last_ = pd.Timestamp(params.pop("last"))
            model.context_ = arrays.pop("context")
            model.set_state(params, arrays)
            model._load_files(path)
        except ModelFormatError:
            raise
        except (OSError, ValueError, KeyError) as error:
            raise ModelFormatError(f"cannot read a saved forecaster in {path}: {error}") from error
        return model


FORECASTERS: dict[str, type[Forecaster]] = {}


def register_forecaster(cls: type[Forecaster]) -> type[Forecaster]:
    FORECASTERS[cls.name] = cls
    return cls


def make_forecaster(name: str, **config: Any) -> Forecaster:
    """A fresh forecaster of ``name`` with ``config`` overriding its defaults."""
    try:
        cls = FORECASTERS[name]
    except KeyError:
        raise ValueError(f"unknown forecaster {name!r}; known: {sorted(FORECASTERS)}") from None
    return cls(cls.config_class.from_dict(config))


def _filled(grid: pd.Series, fallback: np.ndarray) -> np.ndarray:
    """Values with gaps replaced by ``fallback`` (same length)."""
    values = grid.to_numpy(dtype="float64")
    return np.where(np.isfinite(values), values, fallback)


# -- seasonal naive ------------------------------------------------------------------------
@register_forecaster
class SeasonalNaiveForecaster(Forecaster):
    """The value one season before (a day, or a week for weekly and weekday/weekend cycles).

    Without a season, the last value. With a weekly season but less than two
    weeks of history, the value one day before. Quantiles: the training
    errors of the same rule at each distance ahead (``y_t − y_{t−k m}`` for a
    step ``k`` seasons ahead), by bucket of distance; where the history holds
    too few such pairs, the farthest measured bucket widened by ``√k``.
    """

    name = "seasonal_naive"

    def min_history_points(self, step: pd.Timedelta | None = None) -> int:
        """Five pairs of points one season apart: a forced season needs a day and five steps."""
        if self.config.season in ("none", "auto") or step is None:
            # Without two days of history "auto" finds no season: pairs one step apart.
            return self.min_history_length
        return max(self.min_history_length, max(1, int(_DAY / step)) + 5)

    def _fit(self, grid: pd.Series) -> None:
        if self.season_ in ("workweek", "7D") and len(grid) < 2 * (_WEEK / self.step_):
            self.season_ = "1D"
        m = self.period_steps
        values = grid.to_numpy(dtype="float64")
        errors = values[m:] - values[:-m] if len(values) > m else np.array([])
        errors = errors[np.isfinite(errors)]
        if errors.size < 5:
            raise ValueError(f"history holds {errors.size} pairs of points one season "
                             f"({m} steps) apart; the seasonal naive forecast needs at least 5")
        # Errors k seasons ahead are y(t) - y(t - k m): measured per distance-ahead bucket
        # while the history holds enough such pairs, widened by sqrt(k) beyond.
        rows = []
        measured_lag, measured = m, np.quantile(errors, QUANTILES)
        for bound in _HORIZON_BUCKETS:
            lag = math.ceil(min(bound, 10**7) / m) * m
            pairs = values[lag:] - values[:-lag] if len(values) > lag else np.array([])
            pairs = pairs[np.isfinite(pairs)]
            if pairs.size >= max(30, len(values) // 10):
                measured_lag, measured = lag, np.quantile(pairs, QUANTILES)
                rows.append(measured)
            else:
                rows.append(measured * math.sqrt(lag / measured_lag))
        self.error_quantiles_ = np.stack(rows)

    def context_length(self) -> int:
        return self.period_steps

    def _forecast(self, context: pd.Series, index: pd.DatetimeIndex) -> pd.DataFrame:
        m = self.period_steps
        values = context.to_numpy(dtype="float64")
        if len(values) < m:
            values = np.concatenate([np.full(m - len(values), np.nan), values])
        last_season = pd.Series(values[-m:]).ffill().bfill().to_numpy()
        h = np.arange(len(index))
        yhat = last_season[h % m]
        quantiles = yhat[:, None] + self.error_quantiles_[np.searchsorted(_HORIZON_BUCKETS, h + 1)]
        frame = pd.DataFrame(quantiles, index=index, columns=list(QUANTILE_COLUMNS))
        frame["yhat"] = yhat
        return frame

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"error_quantiles": self.error_quantiles_}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.error_quantiles_ = arrays["error_quantiles"]


# -- the seasonal profile shared by ARIMA and the forest -----------------------------------
def _fill_trailing_gap(grid: pd.Series) -> pd.Series:
    """A history that ends in a gap (a late scrape, a live window read up to now) carries its
    last observed value to the end, so that the forecast still starts after the last step."""
    values = grid.to_numpy(dtype="float64")
    observed = np.flatnonzero(np.isfinite(values))
    if observed.size == 0 or observed[-1] == len(values) - 1:
        return grid
    filled = values.copy()
    filled[observed[-1] + 1:] = values[observed[-1]]
    return pd.Series(filled, index=grid.index, name=grid.name)


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    return index.as_unit("ns").asi8


class _SeasonalProfile:
    """The dynamic threshold's seasonal profile (median per slot), for forecasters that use it."""

    season_: str
    step_: pd.Timedelta

    def _fit_profile(self, grid: pd.Series, slot_s: int) -> None:
        self.slot_ns_ = slot_length_ns(self.step_, slot_s)
        self.profile_ = seasonal_profile(_ns(grid.index), grid.to_numpy(dtype="float64"),
                                         self.season_, self.slot_ns_)

    def _profile_at(self, stamps_ns: np.ndarray) -> np.ndarray:
        slots, _ = slot_index(stamps_ns, self.season_, self.slot_ns_)
        return self.profile_[slots]


# -- profile + ARIMA -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class ArimaForecasterConfig(ForecasterConfig):
    """``orders``: the (p, d, q) tried, the lowest AIC wins. ``max_train_points``: the
    ARIMA learns from at most this many recent points. ``context``: points of recent
    history the state is filtered over before forecasting. ``slot_s``: the profile's slot."""

    orders: tuple[tuple[int, int, int], ...] = ((1, 0, 0), (2, 0, 0), (1, 0, 1), (2, 0, 1),
                                                (0, 1, 1), (1, 1, 1))
    max_train_points: int = 4000
    context: int = 576
    slot_s: int = 300

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.orders:
            raise ValueError("orders is empty; give at least one (p, d, q)")
        for order in self.orders:
            if len(order) != 3 or any(not 0 <= int(x) <= 3 for x in order):
                raise ValueError(f"order {order!r} must be (p, d, q) with each in [0, 3]")
        check_int("max_train_points", self.max_train_points, 50, 1_000_000)
        check_int("context", self.context, 10, 100_000)
        check_int("slot_s", self.slot_s, 1, 86_400)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        values = dict(values)
        if "orders" in values:  # JSON turns tuples into lists
            values["orders"] = tuple(tuple(int(x) for x in o) for o in values["orders"])
        return super().from_dict(values)


def _arima(endog: np.ndarray, order: tuple[int, int, int]) -> Any:
    from statsmodels.tsa.arima.model import ARIMA  # heavy import, only when forecasting

    trend = "c" if order[1] == 0 else "n"
    return ARIMA(endog, order=order, trend=trend)


@register_forecaster
class ArimaForecaster(_SeasonalProfile, Forecaster):
    """Seasonal profile plus an ARIMA on the remainder; normal quantiles of its forecast error."""

    name = "arima"
    config_class = ArimaForecasterConfig
    min_history_length = 50

    def _fit(self, grid: pd.Series) -> None:
        config: ArimaForecasterConfig = self.config  # type: ignore[assignment]
        self._fit_profile(grid, config.slot_s)
        remainder = grid.to_numpy(dtype="float64") - self._profile_at(_ns(grid.index))
        remainder = remainder[-config.max_train_points:]
        best: tuple[float, tuple[int, int, int], np.ndarray] | None = None
        for order in config.orders:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter: judged by AIC below
                try:
                    result = _arima(remainder, order).fit()
                except (ValueError, np.linalg.LinAlgError):
                    continue
            if math.isfinite(result.aic) and (best is None or result.aic < best[0]):
                best = (float(result.aic), tuple(int(x) for x in order), result.params)
        if best is None:
            raise ValueError("no ARIMA order of the grid could be fitted to this history")
        _, self.order_, self.params_ = best

    def context_length(self) -> int:
        return self.config.context  # type: ignore[attr-defined]

    def _forecast(self, context: pd.Series, index: pd.DatetimeIndex) -> pd.DataFrame:
        remainder = context.to_numpy(dtype="float64") - self._profile_at(_ns(context.index))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _arima(remainder, self.order_).filter(self.params_)
            predicted = result.get_forecast(len(index))
        mean = np.asarray(predicted.predicted_mean, dtype="float64")
        sd = np.sqrt(np.maximum(np.asarray(predicted.var_pred_mean, dtype="float64"), 0.0))
        yhat = self._profile_at(_ns(index)) + mean
        z = norm.ppf(QUANTILES)
        frame = pd.DataFrame(yhat[:, None] + sd[:, None] * z[None, :], index=index,
                             columns=list(QUANTILE_COLUMNS))
        frame["yhat"] = yhat
        return frame

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"order": list(self.order_), "slot_ns": int(self.slot_ns_)},
                {"profile": self.profile_, "params": np.asarray(self.params_)})

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.order_ = tuple(int(x) for x in params["order"])
        self.slot_ns_ = int(params["slot_ns"])
        self.profile_ = arrays["profile"]
        self.params_ = arrays["params"]


# -- random forest, direct multi-step ------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomForestForecasterConfig(ForecasterConfig):
    """``n_lags``: recent values seen (their median is the reference level).
    ``n_samples``: (origin, steps ahead) pairs learnt from. ``train_horizon``: the
    longest distance ahead sampled in training (farther ones reuse it). Forest
    hyperparameters as in scikit-learn; ``slot_s``: the profile's slot."""

    n_lags: int = 12
    n_samples: int = 10_000
    train_horizon: int = 288
    n_estimators: int = 40
    max_depth: int = 12
    min_samples_leaf: int = 5
    slot_s: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_lags", self.n_lags, 1, 1000)
        check_int("n_samples", self.n_samples, 100, 10_000_000)
        check_int("train_horizon", self.train_horizon, 1, 100_000)
        check_int("n_estimators", self.n_estimators, 1, 2000)
        check_int("max_depth", self.max_depth, 1, 100)
        check_int("min_samples_leaf", self.min_samples_leaf, 1, 10_000)
        check_int("slot_s", self.slot_s, 1, 86_400)


@register_forecaster
class RandomForestForecaster(_SeasonalProfile, Forecaster):
    """Direct multi-step forest on recent values, season and calendar; quantiles out of bag."""

    name = "random_forest"
    config_class = RandomForestForecasterConfig
    min_history_length = 50

    @property
    def n_features(self) -> int:
        return self.config.n_lags + 7  # type: ignore[attr-defined]

    def context_length(self) -> int:
        return self.config.n_lags + self.period_steps  # type: ignore[attr-defined]

    def _features(self, values: np.ndarray, stamps_ns: np.ndarray, origins: np.ndarray,
                  ahead: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, reference level and scale for (origin position, steps ahead) pairs.

        ``values`` may hold NaN (gaps); the origin's own value is ``values[origin]``.
        """
        config: RandomForestForecasterConfig = self.config  # type: ignore[assignment]
        m, step_ns = self.period_steps, self.step_.value
        lags = np.stack([values[np.maximum(origins - i, 0)] for i in range(config.n_lags)], axis=1)
        reference = np.nanmedian(np.where(np.isfinite(lags), lags, np.nan), axis=1)
        reference = np.where(np.isfinite(reference), reference, self.level_)
        scale = self.scale_
        target_ns = stamps_ns[origins] + ahead * step_ns
        seasons_back = (ahead - 1) // m + 1
        naive_at = origins + ahead - seasons_back * m
        naive = np.where(naive_at >= 0, values[np.clip(naive_at, 0, len(values) - 1)], np.nan)
        profile_target = self._profile_at(target_ns)
        naive = np.where(np.isfinite(naive), naive, profile_target)
        tod = 2 * np.pi * (target_ns % _DAY.value) / _DAY.value
        columns = [
            *(((lags[:, i] - reference) / scale) for i in range(config.n_lags)),
            (profile_target - reference) / scale,
            (self._profile_at(stamps_ns[origins]) - reference) / scale,
            (naive - reference) / scale,
            np.sin(tod), np.cos(tod),
            ((target_ns // _DAY.value + 3) % 7 >= 5).astype(float),
            np.log1p(ahead.astype(float)),
        ]
        features = np.nan_to_num(np.stack(columns, axis=1), nan=0.0, posinf=0.0, neginf=0.0)
        return features, reference, np.full(len(origins), scale)

    def _fit(self, grid: pd.Series) -> None:
        from sklearn.ensemble import RandomForestRegressor

        config: RandomForestForecasterConfig = self.config  # type: ignore[assignment]
        values = grid.to_numpy(dtype="float64")
        stamps = _ns(grid.index)
        self._fit_profile(grid, config.slot_s)
        self.level_ = float(np.nanmedian(values))
        diffs = np.abs(np.diff(values))
        spread = float(np.nanmedian(np.abs(values - self.level_))) * 1.4826
        self.scale_ = max(spread, float(np.nanmedian(diffs)) if np.isfinite(diffs).any() else 0.0,
                          1e-9 * max(1.0, abs(self.level_)))
        rng = np.random.default_rng(config.seed)
        horizon = min(config.train_horizon, config.max_horizon, len(values) - config.n_lags - 1)
        if horizon < 1:
            raise ValueError(f"history has {len(values)} steps; the forest needs more than "
                             f"{config.n_lags + 1}")
        ahead = rng.integers(1, horizon + 1, size=config.n_samples)
        origins = rng.integers(config.n_lags - 1, len(values) - ahead)
        keep = np.isfinite(values[origins + ahead]) & np.isfinite(values[origins])
        origins, ahead = origins[keep], ahead[keep]
        if origins.size < 50:
            raise ValueError(f"history holds {origins.size} usable (origin, target) pairs; "
                             "the forest needs at least 50")
        features, reference, scale = self._features(values, stamps, origins, ahead)
        target = (values[origins + ahead] - reference) / scale
        forest = RandomForestRegressor(
            n_estimators=config.n_estimators, max_depth=config.max_depth,
            min_samples_leaf=config.min_samples_leaf, max_features=0.5, bootstrap=True,
            oob_score=True, random_state=config.seed, n_jobs=1)
        forest.fit(features, target)
        residual = target - forest.oob_prediction_
        bucket = np.searchsorted(_HORIZON_BUCKETS, ahead)
        overall = np.quantile(residual, QUANTILES)
        self.residual_quantiles_ = np.stack([
            np.quantile(residual[bucket == b], QUANTILES) if (bucket == b).sum() >= 30
            else overall for b in range(len(_HORIZON_BUCKETS))])
        # A bucket beyond those trained on keeps the farthest trained one's spread.
        trained = [b for b in range(len(_HORIZON_BUCKETS)) if (bucket == b).sum() >= 30]
        if trained:
            self.residual_quantiles_[trained[-1] + 1:] = self.residual_quantiles_[trained[-1]]
        self.forest_ = forest

    def _forecast(self, context: pd.Series, index: pd.DatetimeIndex) -> pd.DataFrame:
        values = context.to_numpy(dtype="float64")
        stamps = _ns(context.index)
        ahead = np.arange(1, len(index) + 1)
        origins = np.full(len(index), len(values) - 1)
        # The forest knows distances up to its training horizon; beyond, the farthest it knows
        # with the target's own calendar and season.
        features, reference, scale = self._features(values, stamps, origins, ahead)
        limit = np.log1p(float(min(self.config.train_horizon, self.config.max_horizon)))
        features[:, -1] = np.minimum(features[:, -1], limit)
        yhat = reference + scale * self.forest_.predict(features)
        bucket = np.searchsorted(_HORIZON_BUCKETS, ahead)
        quantiles = yhat[:, None] + scale[:, None] * self.residual_quantiles_[bucket]
        frame = pd.DataFrame(quantiles, index=index, columns=list(QUANTILE_COLUMNS))
        frame["yhat"] = yhat
        return frame

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"slot_ns": int(self.slot_ns_), "level": self.level_, "scale": self.scale_},
                {"profile": self.profile_, "residual_quantiles": self.residual_quantiles_})

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.slot_ns_ = int(params["slot_ns"])
        self.level_, self.scale_ = float(params["level"]), float(params["scale"])
        self.profile_ = arrays["profile"]
        self.residual_quantiles_ = arrays["residual_quantiles"]

    def _save_files(self, directory: Path) -> None:
        from models.random_forest import FOREST_FILE, save_forest

        save_forest(self.forest_, directory / FOREST_FILE)

    def _load_files(self, directory: Path) -> None:
        from models.random_forest import FOREST_FILE, load_forest

        self.forest_ = load_forest(directory / FOREST_FILE, self.n_features, type(self).__name__)


# -- median of several forecasters --------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class MedianEnsembleConfig(ForecasterConfig):
    """``members``: the forecasters whose median is taken (each with its defaults)."""

    members: tuple[str, ...] = ("seasonal_naive", "arima", "random_forest")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.members) < 2:
            raise ValueError(f"members={self.members!r}: an ensemble needs at least two")
        unknown = [m for m in self.members if m not in FORECASTERS or m == "median_ensemble"]
        if unknown:
            raise ValueError(f"unknown ensemble member(s) {unknown}; known: "
                             f"{sorted(n for n in FORECASTERS if n != 'median_ensemble')}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        values = dict(values)
        if "members" in values:
            values["members"] = tuple(values["members"])
        return super().from_dict(values)


@register_forecaster
class MedianEnsembleForecaster(Forecaster):
    """Median, per step and column, of its members' forecasts."""

    name = "median_ensemble"
    config_class = MedianEnsembleConfig
    min_history_length = 50

    @classmethod
    def from_members(cls, members: list[Forecaster]) -> MedianEnsembleForecaster:
        """An ensemble of forecasters already fitted on the same history."""
        config = MedianEnsembleConfig(members=tuple(m.name for m in members),
                                      max_horizon=min(m.config.max_horizon for m in members))
        ensemble = cls(config)
        first = members[0]
        ensemble.step_, ensemble.season_, ensemble.last_ = first.step_, first.season_, first.last_
        ensemble.members_ = list(members)
        ensemble.context_ = max((m.context_ for m in members), key=len)
        return ensemble

    def _fit(self, grid: pd.Series) -> None:
        horizon = self.config.max_horizon
        self.members_ = [make_forecaster(name, max_horizon=horizon).fit(grid)
                         for name in self.config.members]  # type: ignore[attr-defined]

    def context_length(self) -> int:
        return max(m.context_length() for m in self.members_)

    def _forecast(self, context: pd.Series, index: pd.DatetimeIndex) -> pd.DataFrame:
        frames = [m._forecast(context.iloc[-m.context_length():], index) for m in self.members_]
        columns = list(FORECAST_COLUMNS)
        stacked = np.stack([f[columns].to_numpy(dtype="float64") for f in frames])
        return pd.DataFrame(np.median(stacked, axis=0), index=index, columns=columns)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"members": [m.name for m in self.members_]}, {}

    def _save_files(self, directory: Path) -> None:
        for member in self.members_:
            member.save(directory / "members" / member.name)

    def _load_files(self, directory: Path) -> None:
        self.members_ = [Forecaster.load(directory / "members" / name)
                         for name in self.config.members]  # type: ignore[attr-defined]
