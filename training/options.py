"""What a training run is asked to do (:class:`TrainOptions`) and what it hands back.

Apart from :mod:`training.train` because more than the job itself reads them:
the CLI and the nightly job build options, and the holdout measurement and the
champion comparison fit "the models of these options" without importing the
job that runs them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

import models
from models.alarms import AlarmPolicy
from models.backtest import DEFAULT_FORECASTERS
from models.bundle import DEFAULT_DETECTORS
from models.correlation import CorrelationDetector
from models.forecast import FORECASTERS
from training.promotion import DEFAULT_GATE, GateRule
from training.tracking import DEFAULT_EXPERIMENT, DEFAULT_MODEL_NAME


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """What ``aiops train`` does.

    ``holdout_fraction`` of each series' most recent points is held out to
    measure the detectors before the final fit on all of the data; 0 skips
    the measurement.
    """

    data: Path
    detectors: tuple[str, ...] = (*DEFAULT_DETECTORS, CorrelationDetector.name)
    detector_configs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    holdout_fraction: float = 0.2
    model_name: str = DEFAULT_MODEL_NAME
    experiment: str = DEFAULT_EXPERIMENT
    progress: bool = True
    #: Steps ahead the forecasters are backtested on and serve at most; 0 trains none.
    forecast_horizon: int = 288
    #: The forecasters compared by backtest for each series (their median too, with two or more).
    forecasters: tuple[str, ...] = DEFAULT_FORECASTERS
    #: The rows used: ``start`` inclusive, ``end`` exclusive (UTC); None: all of them.
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    #: How the challenger must compare with the champion on the holdout to replace it.
    gate: tuple[GateRule, ...] = DEFAULT_GATE
    run_name: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    #: An MLflow run created beforehand to train in (the nightly job's claim); None: a new one.
    run_id: str | None = None
    #: The detectors' final fit leaves out the incident the champion is paging at the end of
    #: the data under this policy (:mod:`training.unlearnt`); None: every row is learnt.
    alarm_policy: AlarmPolicy | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.forecast_horizon <= 100_000:
            raise ValueError(f"forecast_horizon={self.forecast_horizon} must lie in [0, 100000]")
        if not 0.0 <= self.holdout_fraction < 0.9:
            raise ValueError(f"holdout_fraction={self.holdout_fraction} must lie in [0, 0.9)")
        if not self.detectors:
            raise ValueError("detectors is empty; name at least one, e.g. dynamic_threshold")
        known = [*models.registered_names(), CorrelationDetector.name]
        unknown = [d for d in self.detectors if d not in known]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {sorted(known)}")
        if not self.forecasters:
            raise ValueError("forecasters is empty; name at least one, e.g. seasonal_naive")
        strange = [f for f in self.forecasters if f not in FORECASTERS]
        if strange:
            raise ValueError(f"unknown forecaster(s) {strange}; known: {sorted(FORECASTERS)}")

    @property
    def use_correlation(self) -> bool:
        return CorrelationDetector.name in self.detectors

    @property
    def series_detectors(self) -> tuple[str, ...]:
        """The per-series detectors (everything but the per-service correlation)."""
        return tuple(d for d in self.detectors if d != CorrelationDetector.name)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    version: str
    champion: bool
    metrics: dict[str, float]
    #: Series not trained, and series trained without some detectors: one note each
    #: (see :func:`training.fleet.history_note`).
    failures: dict[str, str]
    decision: str = ""
    partial: dict[str, str] = dataclasses.field(default_factory=dict)
