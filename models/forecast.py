"""Forecasters: how much load is coming, with quantiles. The base, its registry and the baseline.

Every forecaster has a frozen config dataclass, ``fit(history)`` returning
self, learned state in attributes ending in ``_``, and
``forecast(horizon, history=None)`` returning a frame indexed by the
``horizon`` timestamps after the last point of ``history`` (or of the fitted
history) with columns ``yhat`` (point forecast), ``q10``, ``q50``, ``q90``.
``history`` is the recent past the forecast starts from, so one fitted model
serves a rolling origin without refitting (what the backtest and the API do).
Persistence (:class:`models.contract.Model`) writes ``config.json``,
``state.json`` and ``arrays.npz``; nothing is pickled.

- :class:`SeasonalNaiveForecaster` (here) repeats the last season (the value
  one day, or one week, before); the baseline every result is compared with.
- :class:`models.arima_forecast.ArimaForecaster` removes a seasonal profile
  (median per slot of the day or week, as the dynamic threshold learns it),
  fits an ARIMA on what remains (statsmodels; order by AIC over a small grid)
  and forecasts the profile plus the ARIMA's forecast: a seasonal ARIMA whose
  seasonality is deterministic, which fits in a second where a SARIMA with a
  288-step season takes minutes.
- :class:`models.random_forest_forecast.RandomForestForecaster` predicts every
  step of the horizon at once (direct multi-step) from the recent values, the
  seasonal profile at the target, the value one season before it, its time of
  day and the distance ahead; its quantiles are out-of-bag residual quantiles
  by distance ahead.
- :class:`models.ensemble_forecast.MedianEnsembleForecaster` takes, step by
  step and column by column, the median of several forecasters' forecasts,
  whose errors differ.
- :class:`models.lstm_forecast.LstmForecaster` (``"lstm"``, its own module so
  that torch stays out of the others): an LSTM encoder and a decoder shared by
  all distances ahead predict the three quantiles of every step as offsets
  from the smoothed seasonal naive value; one global network can serve many
  series (:func:`models.lstm_forecast.fit_global`).

Seasonality (none, daily, weekdays/weekends, weekly) is detected from the
data with :func:`models.seasonality.detect_season`.
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models import catalog
from models.base import check_series, history_step
from models.catalog import register
from models.contract import Model, ModelConfig, check_int
from models.seasonality import detect_season, seasonal_profile, slot_index, slot_length_ns

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
class ForecasterConfig(ModelConfig):
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


class Forecaster(Model):
    """Base of every forecaster; see the module docstring for the contract.

    Besides a class's own learned state, every fitted forecaster keeps the
    grid step (``step_``), the season (``season_``) and the end of its history
    (``last_``, ``context_``: the default origin of a forecast); the base saves
    them. A class's own state is saved under its attribute names without the
    trailing ``_`` (``error_quantiles``), as forecasters always have.
    """

    kind: ClassVar[catalog.Kind] = "forecaster"
    config_class: ClassVar[type[ForecasterConfig]] = ForecasterConfig
    _kind_state: ClassVar[frozenset[str]] = frozenset({"step_", "season_", "last_", "context_"})
    #: Fewest points ``fit`` accepts.
    min_history_length: ClassVar[int] = 10

    def fit(self, history: pd.Series) -> Self:
        """Learn from ``history`` (a float Series on a UTC index; NaN marks gaps)."""
        with self._fitting():
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

    @property
    def period_steps(self) -> int:
        """Steps in one season (1 when there is none)."""
        period = _NAIVE_PERIOD[self.season_]
        return 1 if period is None else max(1, int(period / self.step_))

    # -- persistence: the step, season and origin beside a class's own state -------------
    @classmethod
    def _state_key(cls, attribute: str) -> str:
        return attribute[:-1]

    @classmethod
    def _attribute(cls, key: str) -> str:
        return f"{key}_"

    def _state_for_save(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        params, arrays = self.get_state()
        params = {**params, "step_ns": int(self.step_.value), "season": self.season_,
                  "last": self.last_.isoformat()}
        return params, {"context": self.context_, **arrays}

    def _restore_from_load(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        params, arrays = dict(params), dict(arrays)
        self.step_ = pd.Timedelta(int(params.pop("step_ns")), unit="ns")
        self.season_ = params.pop("season")
        self.last_ = pd.Timestamp(params.pop("last"))
        self.context_ = arrays.pop("context")
        self.set_state(params, arrays)


#: The registered forecasters by name (a live, read-only view of the catalog).
FORECASTERS: Mapping[str, type[Forecaster]] = catalog.classes("forecaster")  # type: ignore[assignment]


def make_forecaster(name: str, **config: Any) -> Forecaster:
    """A fresh forecaster of ``name`` with ``config`` overriding its defaults."""
    return catalog.make(name, "forecaster", **config)  # type: ignore[return-value]


def _filled(grid: pd.Series, fallback: np.ndarray) -> np.ndarray:
    """Values with gaps replaced by ``fallback`` (same length)."""
    values = grid.to_numpy(dtype="float64")
    return np.where(np.isfinite(values), values, fallback)


# -- helpers of the concrete forecasters --------------------------------------------------
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


def index_ns(index: pd.DatetimeIndex) -> np.ndarray:
    return index.as_unit("ns").asi8


class SeasonalProfile:
    """The dynamic threshold's seasonal profile (median per slot), for forecasters that use it."""

    season_: str
    step_: pd.Timedelta

    def _fit_profile(self, grid: pd.Series, slot_s: int) -> None:
        self.slot_ns_ = slot_length_ns(self.step_, slot_s)
        self.profile_ = seasonal_profile(index_ns(grid.index), grid.to_numpy(dtype="float64"),
                                         self.season_, self.slot_ns_)

    def _profile_at(self, stamps_ns: np.ndarray) -> np.ndarray:
        slots, _ = slot_index(stamps_ns, self.season_, self.slot_ns_)
        return self.profile_[slots]


# -- seasonal naive ------------------------------------------------------------------------
@register
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

