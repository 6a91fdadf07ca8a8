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
- :class:`ArimaForecaster` removes a seasonal profile (median per slot of the
  day or week, as the dynamic threshold learns it), fits an ARIMA on what
  remains (statsmodels; order by AIC over a small grid) and forecasts the
  profile plus the ARIMA's forecast: a seasonal ARIMA whose seasonality is
  deterministic, which fits in a second where a SARIMA with a 288-step season
  takes minutes.

Seasonality (none, daily, weekdays/weekends, weekly) is detected from the
data with :func:`models.thresholds.detect_season`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy.stats import norm

from features.series import infer_step
from models.base import (
    DetectorConfig,
    ModelFormatError,
    NotFittedError,
    check_format,
    check_int,
    check_series,
    header,
    read_json,
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
        values = check_series(history, name="history", min_length=self.min_history_length)
        if np.isfinite(values.to_numpy()).sum() < self.min_history_length:
            raise ValueError(f"history has {int(np.isfinite(values.to_numpy()).sum())} "
                             f"finite values; {self.name} needs at least {self.min_history_length}")
        self.step_ = infer_step(values.index)
        grid = regular_grid(values, self.step_)
        self.season_ = (detect_season(grid, self.step_) if self.config.season == "auto"
                        else self.config.season)
        self._fit(grid)
        self.last_ = grid.index[-1]
        self.context_ = grid.iloc[-self.context_length():].to_numpy()
        return self

    def forecast(self, horizon: int, history: pd.Series | None = None) -> pd.DataFrame:
        """``yhat, q10, q50, q90`` for the ``horizon`` steps after ``history`` (default: the fit's)."""
        self._check_fitted()
        check_int("horizon", horizon, 1, self.config.max_horizon)
        if history is None:
            grid = pd.Series(self.context_, index=pd.date_range(
                end=self.last_, periods=len(self.context_), freq=self.step_))
        else:
            values = check_series(history, name="history", min_length=1)
            grid = regular_grid(values, self.step_).iloc[-self.context_length():]
            if not np.isfinite(grid.to_numpy()).any():
                raise ValueError("history holds no finite value to forecast from")
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
        path.mkdir(parents=True, exist_ok=True)
        params, arrays = self.get_state()
        params = {**params, "step_ns": int(self.step_.value), "season": self.season_,
                  "last": self.last_.isoformat()}
        (path / "config.json").write_text(
            json.dumps(header(self.name, type(self).__name__, self.config.to_dict()), indent=2))
        (path / "state.json").write_text(json.dumps(params, indent=2))
        np.savez(path / "arrays.npz", context=self.context_, **arrays)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        path = Path(directory)
        saved = read_json(path / "config.json", "a saved forecaster")
        params = read_json(path / "state.json", "a saved forecaster")
        check_format(saved, path)
        target = FORECASTERS.get(saved.get("name", "?"))
        if target is None or not issubclass(target, cls):
            raise ModelFormatError(f"{path} holds {saved.get('name')!r}, not a {cls.__name__}")
        try:
            with np.load(path / "arrays.npz", allow_pickle=False) as stored:
                arrays = {k: stored[k] for k in stored.files}
            model = target(target.config_class.from_dict(saved["config"]))
            model.step_ = pd.Timedelta(int(params.pop("step_ns")), unit="ns")
            model.season_ = params.pop("season")
            model.last_ = pd.Timestamp(params.pop("last"))
            model.context_ = arrays.pop("context")
            model.set_state(params, arrays)
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
    errors of the same rule (``y_t − y_{t−m}``), widened by ``√k`` for a step
    ``k`` seasons ahead, as for a random walk over seasons.
    """

    name = "seasonal_naive"

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
        self.error_quantiles_ = np.quantile(errors, QUANTILES)

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
        widen = np.sqrt(h // m + 1)[:, None]
        quantiles = yhat[:, None] + self.error_quantiles_[None, :] * widen
        frame = pd.DataFrame(quantiles, index=index, columns=list(QUANTILE_COLUMNS))
        frame["yhat"] = yhat
        return frame

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"error_quantiles": self.error_quantiles_}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.error_quantiles_ = arrays["error_quantiles"]


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
class ArimaForecaster(Forecaster):
    """Seasonal profile plus an ARIMA on the remainder; normal quantiles of its forecast error."""

    name = "arima"
    config_class = ArimaForecasterConfig
    min_history_length = 50

    def _profile_at(self, index: pd.DatetimeIndex) -> np.ndarray:
        slots, _ = slot_index(index.as_unit("ns").asi8, self.season_, self.slot_ns_)
        return self.profile_[slots]

    def _fit(self, grid: pd.Series) -> None:
        config: ArimaForecasterConfig = self.config  # type: ignore[assignment]
        self.slot_ns_ = slot_length_ns(self.step_, config.slot_s)
        stamps = grid.index.as_unit("ns").asi8
        self.profile_ = seasonal_profile(stamps, grid.to_numpy(dtype="float64"), self.season_,
                                         self.slot_ns_)
        remainder = (grid.to_numpy(dtype="float64") - self._profile_at(grid.index))
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
        remainder = context.to_numpy(dtype="float64") - self._profile_at(context.index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _arima(remainder, self.order_).filter(self.params_)
            predicted = result.get_forecast(len(index))
        mean = np.asarray(predicted.predicted_mean, dtype="float64")
        sd = np.sqrt(np.maximum(np.asarray(predicted.var_pred_mean, dtype="float64"), 0.0))
        yhat = self._profile_at(index) + mean
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
