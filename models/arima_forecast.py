"""ARIMA forecaster: a seasonal profile plus an ARIMA on what remains, with normal quantiles.

The profile is the dynamic threshold's (median per slot of the day or week);
statsmodels fits an ARIMA to the remainder, the order chosen by AIC over a
small grid, and the forecast is the profile plus the ARIMA's forecast. A
seasonal ARIMA whose seasonality is deterministic: it fits in a second where a
SARIMA with a 288-step season takes minutes.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy.stats import norm

from models.catalog import register
from models.contract import check_int
from models.forecast import (
    QUANTILE_COLUMNS,
    QUANTILES,
    Forecaster,
    ForecasterConfig,
    SeasonalProfile,
    index_ns,
)


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


@register
class ArimaForecaster(SeasonalProfile, Forecaster):
    """Seasonal profile plus an ARIMA on the remainder; normal quantiles of its forecast error."""

    name = "arima"
    config_class = ArimaForecasterConfig

    @classmethod
    def _test_config(cls) -> ArimaForecasterConfig:
        return ArimaForecasterConfig(orders=((1, 0, 0), (1, 0, 1)), max_train_points=600)
    min_history_length = 50

    def _fit(self, grid: pd.Series) -> None:
        config: ArimaForecasterConfig = self.config  # type: ignore[assignment]
        self._fit_profile(grid, config.slot_s)
        remainder = grid.to_numpy(dtype="float64") - self._profile_at(index_ns(grid.index))
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
        remainder = context.to_numpy(dtype="float64") - self._profile_at(index_ns(context.index))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _arima(remainder, self.order_).filter(self.params_)
            predicted = result.get_forecast(len(index))
        mean = np.asarray(predicted.predicted_mean, dtype="float64")
        sd = np.sqrt(np.maximum(np.asarray(predicted.var_pred_mean, dtype="float64"), 0.0))
        yhat = self._profile_at(index_ns(index)) + mean
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
