"""Median ensemble: step by step and column by column, the median of several forecasters.

Its members' errors differ, so the median is usually more accurate than any
one of them; each member is fitted, saved and loaded as a forecaster of its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models.catalog import register
from models.forecast import (
    FORECAST_COLUMNS,
    FORECASTERS,
    Forecaster,
    ForecasterConfig,
    make_forecaster,
)


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


@register
class MedianEnsembleForecaster(Forecaster):
    """Median, per step and column, of its members' forecasts."""

    name = "median_ensemble"
    config_class = MedianEnsembleConfig
    saved_apart: ClassVar[frozenset[str]] = frozenset({"members_"})

    @classmethod
    def _test_config(cls) -> MedianEnsembleConfig:
        # Members are fitted with their defaults: the two cheapest.
        return MedianEnsembleConfig(members=("seasonal_naive", "random_forest"))
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

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        return None  # the members are read from their own folders (_load_files)

    def parts(self) -> list[Forecaster]:
        return list(getattr(self, "members_", ()))

    def _save_files(self, directory: Path) -> None:
        for member in self.members_:
            member.save(directory / "members" / member.name)

    def _load_files(self, directory: Path) -> None:
        self.members_ = [Forecaster.load(directory / "members" / name)
                         for name in self.config.members]  # type: ignore[attr-defined]
