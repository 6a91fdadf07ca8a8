"""Detectors and forecasters behind one small interface.

Importing the package enrols every built-in model in the catalog
(:mod:`models.catalog`): the detectors, the forecasters (the LSTM forecaster
and the others live in their own modules, imported here so that
``make_forecaster("lstm")`` always works) and the correlation model.
"""

from models.arima import ArimaDetector
from models.arima_forecast import ArimaForecaster
from models.base import (
    EXPECTED_RANGE_SCORE,
    Detector,
    ModelFormatError,
    NotFittedError,
    make_detector,
    registered_names,
    registry_class,
)
from models.contract import Model
from models.correlation import CorrelationDetector
from models.ensemble_forecast import MedianEnsembleForecaster
from models.forecast import Forecaster, SeasonalNaiveForecaster, make_forecaster
from models.lstm import LstmDetector
from models.lstm_forecast import LstmForecaster
from models.random_forest import RandomForestDetector
from models.random_forest_forecast import RandomForestForecaster
from models.thresholds import (
    DynamicThresholdDetector,
    StaticThresholdDetector,
    WindowBaselineDetector,
)

__all__ = [
    "EXPECTED_RANGE_SCORE",
    "ArimaDetector",
    "ArimaForecaster",
    "CorrelationDetector",
    "Detector",
    "DynamicThresholdDetector",
    "Forecaster",
    "LstmDetector",
    "LstmForecaster",
    "MedianEnsembleForecaster",
    "Model",
    "ModelFormatError",
    "NotFittedError",
    "RandomForestDetector",
    "RandomForestForecaster",
    "SeasonalNaiveForecaster",
    "StaticThresholdDetector",
    "WindowBaselineDetector",
    "make_detector",
    "make_forecaster",
    "registered_names",
    "registry_class",
]
