"""Detectors and forecasters behind one small interface.

Importing the package enrols every built-in detector in the registry, and every
built-in forecaster in ``models.forecast.FORECASTERS`` (the LSTM forecaster lives
in its own module, imported here so that ``make_forecaster("lstm")`` always works).
"""

from models.arima import ArimaDetector
from models.base import (
    DEFAULT_THRESHOLD,
    Detector,
    ModelFormatError,
    NotFittedError,
    make_detector,
    registered_names,
    registry_class,
)
from models.lstm import LstmDetector
from models.lstm_forecast import LstmForecaster
from models.random_forest import RandomForestDetector
from models.thresholds import (
    DynamicThresholdDetector,
    StaticThresholdDetector,
    WindowBaselineDetector,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "ArimaDetector",
    "Detector",
    "DynamicThresholdDetector",
    "LstmDetector",
    "LstmForecaster",
    "ModelFormatError",
    "NotFittedError",
    "RandomForestDetector",
    "StaticThresholdDetector",
    "WindowBaselineDetector",
    "make_detector",
    "registered_names",
    "registry_class",
]
