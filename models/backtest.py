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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.base import check_series
from models.ensemble_forecast import MedianEnsembleForecaster
from models.forecast import (
    Forecaster,
    SeasonalNaiveForecaster,
    make_forecaster,
    regular_grid,
)

DEFAULT_FORECASTERS = ("seasonal_naive", "arima", "random_forest")
ENSEMBLE = MedianEnsembleForecaster.name
#: A single forecaster is chosen over the median of all only when its backtest MASE is
#: 30 % lower: with three origins the ranking of close models is noise, and the median of
#: several models is seldom far worse than the best of them while any single one can be
#: (ARIMA can be worse than the seasonal naive rule on some series), so a small win is more
#: likely luck than skill. A narrow margin lets such noisy wins pick single models.
#: Measurements: benchmarks/README.md, "Forecasting".
ENSEMBLE_MARGIN = 0.7


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


def training_part(series: pd.Series, train_fraction: float = 0.5) -> pd.Series:
    """The first ``train_fraction`` of ``series`` on its regular grid: what a backtest fits on."""
    grid = _grid(series)
    return grid.iloc[:int(len(grid) * train_fraction)]


def _grid(series: pd.Series) -> pd.Series:
    values = check_series(series, name="series", min_length=2)
    return regular_grid(values, pd.Timedelta(np.median(np.diff(values.index.asi8)), unit="ns"))


def _backtest_origins(grid: pd.Series, horizon: int, n_origins: int, train_fraction: float
                      ) -> tuple[pd.Series, list[int]]:
    """The training part and the origins of a backtest of ``grid``."""
    first = int(len(grid) * train_fraction)
    starts = origins(len(grid), horizon, n_origins, first)
    if not starts:
        raise ValueError(f"series has {len(grid)} steps; a backtest of horizon {horizon} after "
                         f"training on {train_fraction:.0%} of it needs at least "
                         f"{int(np.ceil(horizon / (1 - train_fraction)))}")
    return grid.iloc[:first], starts


def backtest(
    series: pd.Series,
    names: Sequence[str] = DEFAULT_FORECASTERS,
    *,
    horizon: int,
    n_origins: int = 5,
    train_fraction: float = 0.5,
) -> dict[str, BacktestScore]:
    """Fit each forecaster on the first ``train_fraction`` and score it from ``n_origins`` origins.

    With two forecasters or more, their median (``median_ensemble``) is scored too.

    Raises
    ------
    ValueError
        The series is too short for one full horizon after the training part.
    """
    train, _ = _backtest_origins(_grid(series), horizon, n_origins, train_fraction)
    naive = SeasonalNaiveForecaster().fit(train)
    fitted: dict[str, Forecaster] = {}
    for name in names:
        if name == ENSEMBLE:
            continue
        fitted[name] = naive if name == naive.name else make_forecaster(name).fit(train)
    if ENSEMBLE in names or len(fitted) >= 2:
        # The median of the others, from the same fitted models (no second fit).
        fitted[ENSEMBLE] = MedianEnsembleForecaster.from_members(list(fitted.values()))
    return score_fitted(series, fitted, horizon=horizon, n_origins=n_origins,
                        train_fraction=train_fraction)


def score_fitted(
    series: pd.Series,
    fitted: Mapping[str, Forecaster],
    *,
    horizon: int,
    n_origins: int = 5,
    train_fraction: float = 0.5,
) -> dict[str, BacktestScore]:
    """Score forecasters already fitted on ``training_part(series, train_fraction)``.

    What :func:`backtest` does after fitting, for models fitted elsewhere (one
    global network for many series); no ensemble is added. Raises as it does.
    """
    grid = _grid(series)
    train, starts = _backtest_origins(grid, horizon, n_origins, train_fraction)
    scale = mase_scale(train, SeasonalNaiveForecaster().fit(train).period_steps)
    results = {}
    for name, model in fitted.items():
        error, inside = origin_errors(model, grid, starts, horizon)
        results[name] = BacktestScore(
            name=name,
            mase=float(error.mean() / scale) if error.size else float("nan"),
            coverage=float(inside.mean()) if error.size else float("nan"),
            n_origins=len(starts),
            n_points=int(error.size),
        )
    return results


def origin_errors(model: Forecaster, grid: pd.Series, starts: Sequence[int],
                  horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Over every origin: the absolute error of ``yhat`` at each actual value, and whether
    the actual lies inside [q10, q90]. ``grid`` is regular; missing actuals are skipped."""
    errors, inside = [np.array([])], [np.array([], dtype=bool)]
    for origin in starts:
        frame = model.forecast(horizon, grid.iloc[:origin])
        actual = grid.iloc[origin:origin + horizon].to_numpy(dtype="float64")
        ok = np.isfinite(actual)
        errors.append(np.abs(frame["yhat"].to_numpy()[ok] - actual[ok]))
        inside.append((actual[ok] >= frame["q10"].to_numpy()[ok])
                      & (actual[ok] <= frame["q90"].to_numpy()[ok]))
    return np.concatenate(errors), np.concatenate(inside)


@dataclasses.dataclass(frozen=True)
class Selection:
    """A forecaster fitted on the whole history, and why it was chosen."""

    forecaster: Forecaster
    scores: dict[str, BacktestScore]
    reason: str


def select_forecaster(
    history: pd.Series,
    horizon: int,
    names: Sequence[str] = DEFAULT_FORECASTERS,
    *,
    n_origins: int = 3,
    max_horizon: int | None = None,
) -> Selection:
    """Backtest ``names`` on ``history``, fit the best on all of it.

    With too little history for a backtest of ``horizon`` steps, or when the
    best cannot be fitted on the whole history, the seasonal naive forecaster
    is used and the reason says so. ``max_horizon``: the longest forecast the
    fitted model will serve (default ``horizon``).
    """
    names = list(names)
    if len(names) == 1:
        scores: dict[str, BacktestScore] = {}
        chosen, reason = names[0], "the only forecaster asked for"
    else:
        try:
            scores = backtest(history, names, horizon=horizon, n_origins=n_origins)
        except ValueError as error:
            scores = {}
            chosen = SeasonalNaiveForecaster.name
            reason = f"too little history to compare forecasters ({error}); seasonal naive used"
        else:
            chosen = choose(scores)
            reason = "lowest backtest MASE: " + ", ".join(
                f"{n} {s.mase:.3f}" for n, s in scores.items())
    limit = max(horizon, max_horizon or horizon)
    config: dict[str, Any] = {"max_horizon": limit}
    if chosen == ENSEMBLE:
        # The median of the forecasters that were compared, not of the ensemble's defaults.
        members = tuple(n for n in scores if n != ENSEMBLE) or tuple(n for n in names
                                                                     if n != ENSEMBLE)
        if len(members) >= 2:
            config["members"] = members
    try:
        fitted = make_forecaster(chosen, **config).fit(history)
    except ValueError as error:
        if chosen == SeasonalNaiveForecaster.name:
            raise
        fitted = make_forecaster(SeasonalNaiveForecaster.name, max_horizon=limit).fit(history)
        reason = f"{chosen} could not be fitted ({error}); seasonal naive used"
    return Selection(forecaster=fitted, scores=scores, reason=reason)


def choose(scores: dict[str, BacktestScore]) -> str:
    """The median ensemble, unless one forecaster's MASE is ``ENSEMBLE_MARGIN`` times lower.

    Without an ensemble score: the lowest MASE (the seasonal naive one on ties or when all
    fail).
    """
    finite = {n: s.mase for n, s in scores.items() if np.isfinite(s.mase)}
    if not finite:
        return SeasonalNaiveForecaster.name
    best = min(finite, key=lambda n: (finite[n], n != SeasonalNaiveForecaster.name))
    if ENSEMBLE in finite and best != ENSEMBLE and finite[best] >= ENSEMBLE_MARGIN * finite[ENSEMBLE]:
        return ENSEMBLE
    return best
