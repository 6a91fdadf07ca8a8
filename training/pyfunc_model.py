"""The MLflow pyfunc face of a detector bundle (logged as "models from code").

MLflow copies this file into the logged model, so loading the model needs no
pickle: ``mlflow.pyfunc.load_model(uri).predict(frame)`` reads the bundle's
plain files and scores a long-format frame.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from features.schema import METRIC, SERVICE, TIMESTAMP, VALUE
from features.series import split_series, to_series
from features.validation import validate_frame
from models.alarms import AlarmPolicy
from models.bundle import DetectorBundle


class DetectorBundleModel(PythonModel):
    """Scores long-format rows (timestamp, service, metric, value) with the bundle."""

    def load_context(self, context) -> None:
        self.bundle = DetectorBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = validate_frame(model_input, naive_timestamps="utc")
        parts = [pd.DataFrame(columns=[TIMESTAMP, SERVICE, METRIC, VALUE, "score", "is_anomaly"])]
        for (service, metric), rows in split_series(frame):
            values = to_series(rows)
            result = self.bundle.score(service, metric, values)
            threshold = AlarmPolicy().for_index(values.index).threshold
            parts.append(
                pd.DataFrame(
                    {
                        TIMESTAMP: result.index,
                        SERVICE: service,
                        METRIC: metric,
                        VALUE: result.values,
                        "score": result.score,
                        "is_anomaly": result.score >= threshold,
                    }
                )
            )
        return pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)


mlflow.models.set_model(DetectorBundleModel())
