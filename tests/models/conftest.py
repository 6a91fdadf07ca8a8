"""Seeded synthetic series shared by the model tests: cheap, a few days of 5-minute data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

STEP = pd.Timedelta("5min")
POINTS_PER_DAY = 288
HISTORY_DAYS = 3
WINDOW_POINTS = 288
#: Positions in the window left missing, to check NaN handling.
WINDOW_GAPS = (7, 100, 101)


def daily_sine(n_points: int, *, seed: int, start: str = "2026-01-05T00:00Z") -> pd.Series:
    """A level of 50 with a daily sine of amplitude 10 and unit Gaussian noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n_points, freq=STEP)
    t = np.arange(n_points)
    values = 50.0 + 10.0 * np.sin(2 * np.pi * t / POINTS_PER_DAY) + rng.normal(0.0, 1.0, n_points)
    return pd.Series(values, index=index, name="value")


@pytest.fixture(scope="session")
def daily() -> pd.Series:
    """History followed by one more day, one continuous seeded series."""
    return daily_sine(HISTORY_DAYS * POINTS_PER_DAY + WINDOW_POINTS, seed=7)


@pytest.fixture(scope="session")
def history(daily: pd.Series) -> pd.Series:
    return daily.iloc[: HISTORY_DAYS * POINTS_PER_DAY].copy()


@pytest.fixture(scope="session")
def window(daily: pd.Series) -> pd.Series:
    """The day after the history, with a few missing points."""
    out = daily.iloc[HISTORY_DAYS * POINTS_PER_DAY :].copy()
    out.iloc[list(WINDOW_GAPS)] = np.nan
    return out


@pytest.fixture(scope="session")
def fitted_on_history(history):
    """``cls`` fitted on ``history`` with its ``_test_config()``, once for the whole session.

    The contract suites of every kind share these fits (the expensive part of the
    suites); a test must never mutate a model it gets here.
    """
    fitted: dict[type, object] = {}

    def fit(cls):
        if cls not in fitted:
            fitted[cls] = cls(cls._test_config()).fit(history)
        return fitted[cls]

    return fit


@pytest.fixture(scope="module")
def ensemble(fitted_on_history):
    """The default detectors with their test configs, as a bundle of one series (KNOWN)."""
    from models import registry_class
    from models.bundle import DEFAULT_DETECTORS, DetectorBundle
    from tests.models.streams import KNOWN

    detectors = {name: fitted_on_history(registry_class(name)) for name in DEFAULT_DETECTORS}
    return DetectorBundle({KNOWN: detectors})


@pytest.fixture(scope="session")
def make_daily_sine():
    """The generator itself, for tests that need another length or seed."""
    return daily_sine
