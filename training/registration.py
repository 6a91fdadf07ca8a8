"""The model version a run leaves behind: the bundle logged as an MLflow pyfunc and registered.

What goes into the logged model — the pyfunc wrapper, the ``features`` and
``models`` code it imports, pinned pip requirements, a signature and an input
example scored by the wrapper itself — and the ``challenger`` alias on the new
version. Apart from :mod:`training.train` because it changes with MLflow's
model format and with what the served package needs to import, not with the
steps of a training run; the tests of the pins read it on its own.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import features
import models
from features.schema import METRIC, SERVICE, TIMESTAMP, VALUE
from features.series import SeriesKey
from models.bundle import DetectorBundle
from training.options import TrainOptions
from training.tracking import CHALLENGER

_PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def _register(bundle: DetectorBundle, series: dict[SeriesKey, pd.Series],
              options: TrainOptions) -> str:
    """Log the bundle as a pyfunc, register it and point ``challenger`` at it."""
    with tempfile.TemporaryDirectory() as scratch:
        bundle_dir = bundle.save(Path(scratch) / "bundle")
        example = _input_example(series)
        signature = infer_signature(example, _example_output(bundle, example))
        model_info = mlflow.pyfunc.log_model(
            name="detector_bundle",
            python_model=str(_PYFUNC_FILE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(Path(features.__file__).parent), str(Path(models.__file__).parent)],
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(bundle),
            registered_model_name=options.model_name,
        )
    version = str(model_info.registered_model_version)
    MlflowClient().set_registered_model_alias(options.model_name, CHALLENGER, version)
    return version


def _pip_requirements(bundle: DetectorBundle) -> list[str]:
    """What the logged pyfunc needs to import the bundled ``features`` and ``models`` code."""
    names = ["numpy", "pandas", "scipy", "pyarrow", "mlflow", "scikit-learn", "statsmodels",
             "skops", "threadpoolctl"]
    if any(cls.requires_torch for cls in bundle.model_classes()):
        names.append("torch")  # the LSTM modules import torch only when a network is used
    # A local build tag such as "+cpu" is not on the package index: pin the release only.
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def _input_example(series: dict[SeriesKey, pd.Series]) -> pd.DataFrame:
    (service, metric), values = next(iter(series.items()))
    tail = values.dropna().iloc[-30:]
    return pd.DataFrame(
        {TIMESTAMP: tail.index.strftime("%Y-%m-%dT%H:%M:%SZ"), SERVICE: service, METRIC: metric,
         VALUE: tail.to_numpy()}
    )


def _example_output(bundle: DetectorBundle, example: pd.DataFrame) -> pd.DataFrame:
    from training.pyfunc_model import DetectorBundleModel

    model = DetectorBundleModel()
    model.bundle = bundle
    return model.predict(None, example)
