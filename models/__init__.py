"""Detectors and forecasters behind one small interface.

Importing the package enrols every built-in detector in the registry.
"""

from models.base import (
    DEFAULT_THRESHOLD,
    Detector,
    ModelFormatError,
    NotFittedError,
    make_detector,
    registered_names,
    registry_class,
)
from models.thresholds import (
    DynamicThresholdDetector,
    StaticThresholdDetector,
    WindowBaselineDetector,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "Detector",
    "DynamicThresholdDetector",
    "ModelFormatError",
    "NotFittedError",
    "StaticThresholdDetector",
    "WindowBaselineDetector",
    "make_detector",
    "registered_names",
    "registry_class",
]
