"""Rolling-origin backtests of forecasters, and the choice of a model per series.

Each forecaster is fitted once on the history before the first origin, then
forecasts ``horizon`` steps from every origin, conditioned on the history up
to that origin (no refit per origin: the same fitted model the API would
serve). Accuracy is MASE — mean absolute error over the in-sample mean
absolute error of the seasonal naive rule on the training part, so 1.0 is
"as good as repeating the last season in training" — and the share of actual
values inside the forecast's [q10, q90] interval (80 % if well calibrated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.base import check_series
from models.forecast import Forecaster, SeasonalNaiveForecaster, make_forecaster, regular_grid

DEFAULT_FORECASTERS = ("seasonal_naive", "arima")


@dataclasses.dataclass(frozen=True)
class BacktestScore:
    """One forecaster's accuracy over the origins of a backtest."""

    name: str
    mase: float
    coverage: float
    n_origins: int
    n_points: int


def mase_scale(train: pd.Series, period_steps: int) -> float:
    """In-sample mean absolute error of the seasonal naive rule with period ``period_steps``."""
    values = train.to_numpy(dtype="float64")
    m = max(1, min(period_steps, len(values) - 1))
    errors = np.abs(values[m:] - values[:-m])
    errors = errors[np.isfinite(errors)]
    scale = float(errors.mean()) if errors.size else float("nan")
    if not scale > 0:
        # A constant training series: fall back to the one-step naive error, then to 1.
        steps = np.abs(np.diff(values))
        steps = steps[np.isfinite(steps)]
        scale = float(steps.mean()) if steps.size and steps.mean() > 0 else 1.0
    return scale


def origins(n_points: int, horizon: int, n_origins: int, first: int) -> list[int]:
    """Up to ``n_origins`` positions, evenly spaced, from ``first`` to the last with a full horizon."""
    last = n_points - horizon
    if last < first:
        return []
    return sorted(set(np.linspace(first, last, n_origins).astype(int).tolist()))


def backtest(
    series: pd.Series,
    names: Sequence[str] = DEFAULT_FORECASTERS,
    *,
    horizon: int,
    n_origins: int = 5,
    train_fraction: float = 0.5,
) -> dict[str, BacktestScore]:
    """Fit each forecaster on the first ``train_fraction`` and score it from ``n_origins`` origins.

    Raises
    ------
    ValueError
        The series is too short for one full horizon after the training part.
    """
    values = check_series(series, name="series", min_length=2)
    grid = regular_grid(values, pd.Timedelta(np.median(np.diff(values.index.asi8)), unit="ns"))
    first = int(len(grid) * train_fraction)
    starts = origins(len(grid), horizon, n_origins, first)
    if not starts:
        raise ValueError(f"series has {len(grid)} steps; a backtest of horizon {horizon} after "
                         f"training on {train_fraction:.0%} of it needs at least "
                         f"{int(np.ceil(horizon / (1 - train_fraction)))}")
    train = grid.iloc[:first]
    naive = SeasonalNaiveForecaster().fit(train)
    scale = mase_scale(train, naive.period_steps)
    results = {}
    for name in names:
        model: Forecaster = naive if name == naive.name else make_forecaster(name).fit(train)
        errors, inside = [], []
        for origin in starts:
            frame = model.forecast(horizon, grid.iloc[:origin])
            actual = grid.iloc[origin:origin + horizon].to_numpy(dtype="float64")
            ok = np.isfinite(actual)
            errors.append(np.abs(frame["yhat"].to_numpy()[ok] - actual[ok]))
            inside.append((actual[ok] >= frame["q10"].to_numpy()[ok])
                          & (actual[ok] <= frame["q90"].to_numpy()[ok]))
        error = np.concatenate(errors)
        results[name] = BacktestScore(
            name=name,
            mase=float(error.mean() / scale) if error.size else float("nan"),
            coverage=float(np.concatenate(inside).mean()) if error.size else float("nan"),
            n_origins=len(starts),
            n_points=int(error.size),
        )
    return results


def choose(scores: dict[str, BacktestScore]) -> str:
    """The forecaster with the lowest MASE (the seasonal naive one on ties or when all fail)."""
    finite = {n: s.mase for n, s in scores.items() if np.isfinite(s.mase)}
    if not finite:
        return SeasonalNaiveForecaster.name
    return min(finite, key=lambda n: (finite[n], n != SeasonalNaiveForecaster.name))
