"""``aiops forecast``: fit on a history, choose a model by backtest, write the forecast."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.csv_files import read_value_csv
from features.schema import METRIC, SERVICE, TIMESTAMP
from features.series import split_series, to_series
from features.store import read_dataset
from models.backtest import DEFAULT_FORECASTERS, select_forecaster
from models.base import check_int
from models.forecast import FORECAST_COLUMNS, FORECASTERS

_log = logging.getLogger(__name__)
AUTO = "auto"


@dataclass(frozen=True)
class Forecast:
    """One series' forecast and how its model was chosen."""

    frame: pd.DataFrame
    model: str
    reason: str


def forecast_series(history: pd.Series, horizon: int, model: str = AUTO) -> Forecast:
    """Forecast ``horizon`` steps after ``history`` with ``model``, or the best by backtest."""
    if model != AUTO and model not in FORECASTERS:
        raise ValueError(f"unknown model {model!r}; choose {AUTO} or one of {sorted(FORECASTERS)}")
    check_int("horizon", horizon, 1, 100_000)
    names = DEFAULT_FORECASTERS if model == AUTO else (model,)
    selection = select_forecaster(history, horizon, names)
    reason = "as asked" if model != AUTO and selection.forecaster.name == model else selection.reason
    return Forecast(frame=selection.forecaster.forecast(horizon), model=selection.forecaster.name,
                    reason=reason)


def _until(history: pd.Series, until: str | None) -> pd.Series:
    if until is None:
        return history
    try:
        stamp = pd.Timestamp(until)
    except ValueError as error:
        raise ValueError(f"--until {until!r} is not a timestamp: {error}") from error
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    kept = history[history.index <= stamp]
    if kept.empty:
        raise ValueError(f"no history at or before --until {stamp.isoformat()} "
                         f"(the data starts at {history.index[0].isoformat()})")
    return kept


def forecast_file(source: str | Path, out: str | Path, *, horizon: int,
                  until: str | None = None, model: str = AUTO) -> list[tuple[str, Forecast]]:
    """Write ``timestamp,yhat,q10,q50,q90`` (plus ``service,metric`` for a dataset) to ``out``."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"input {source} does not exist")
    if source.is_dir():
        frame = read_dataset(source)
        histories = [(f"{s}/{m}", (s, m), to_series(rows)) for (s, m), rows in split_series(frame)]
    else:
        histories = [(source.name, None, to_series(read_value_csv(source, duplicates="first")))]
    results, parts = [], []
    for label, key, history in histories:
        try:
            result = forecast_series(_until(history, until), horizon, model)
        except ValueError as error:
            raise ValueError(f"{label}: {error}") from error
        part = result.frame.rename_axis(TIMESTAMP).reset_index()
        if key is not None:
            part.insert(0, METRIC, key[1])
            part.insert(0, SERVICE, key[0])
        parts.append(part)
        results.append((label, result))
    table = pd.concat(parts, ignore_index=True)
    columns = [c for c in (SERVICE, METRIC) if c in table.columns] + [TIMESTAMP, *FORECAST_COLUMNS]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table[columns].to_csv(out, index=False)
    return results
