"""Multi-metric correlation: a metric that its siblings no longer explain.

Per service, each metric is regressed on the other metrics of the same
service at the same instant (latency from request rate and CPU, errors from
latency, …). Where the siblings explain a metric well on held-out data, the
residual of a new point says whether the metric still moves with them. A
latency that rises while CPU and request rate stay normal is invisible to a
detector that only sees latency's own history when the rise is within its
daily range; here it is a large residual.

The model is a ridge regression on the standardised siblings and their
squares (latency grows convexly with utilisation), fitted with numpy and
saved as plain arrays. Scoring is causal: a point's score uses only the
metrics' values at that instant.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from models import catalog
from models.base import EXPECTED_RANGE_SCORE, DetectorConfig
from models.calibration import TailCalibrator
from models.catalog import register
from models.contract import Model
from models.seasonality import robust_scale

#: What a metric going wrong on its own usually means, for the diagnosis line.
SUSPECTS: dict[str, str] = {
    "latency_p99": "suspect network or a downstream dependency",
    "error_rate": "suspect a failing dependency or a bad deploy",
    "cpu_utilization": "suspect a runaway process, a noisy neighbour or a hot code path",
    "memory_utilization": "suspect a memory leak",
    "queue_length": "suspect a stuck or slow consumer",
    "request_rate": "suspect a client, routing or load-balancer change",
}


#: Which metrics explain which: load drives CPU, load and CPU drive latency and queues,
#: latency drives errors. Request rate is the load itself and memory follows neither, so they
#: are not modelled (an empty list). A metric not listed is explained by all its siblings.
#: Explaining a metric only by its drivers keeps a fault where it is: a latency rise does not
#: also make CPU look wrong through a model of CPU that uses latency.
DEFAULT_DRIVERS: dict[str, list[str]] = {
    "request_rate": [],
    "memory_utilization": [],
    "cpu_utilization": ["request_rate"],
    "latency_p99": ["request_rate", "cpu_utilization"],
    "queue_length": ["request_rate", "cpu_utilization"],
    "error_rate": ["request_rate", "latency_p99"],
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorrelationDetectorConfig(DetectorConfig):
    """Parameters
    ----------
    drivers
        Metric → the metrics that explain it (see ``DEFAULT_DRIVERS``, used when None).
    min_r2
        A metric is modelled only when its siblings explain at least this
        share of its variance on held-out data (the last ``holdout_fraction``).
    ridge
        L2 penalty on the standardised features.
    max_train_points
        Most recent points used to fit (keeps fitting fast on long histories).
    """

    drivers: dict[str, list[str]] | None = None
    min_r2: float = 0.5
    ridge: float = 1.0
    holdout_fraction: float = 0.25
    max_train_points: int = 20_000
    min_train_points: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_r2 < 1.0:
            raise ValueError(f"min_r2={self.min_r2} must lie in [0, 1)")
        if self.ridge < 0:
            raise ValueError(f"ridge={self.ridge} must be >= 0")
        if not 0.05 <= self.holdout_fraction <= 0.5:
            raise ValueError(f"holdout_fraction={self.holdout_fraction} must lie in [0.05, 0.5]")
        if self.max_train_points < self.min_train_points:
            raise ValueError(
                f"max_train_points={self.max_train_points} must be >= "
                f"min_train_points={self.min_train_points}"
            )
        if self.min_train_points < 20:
            raise ValueError(f"min_train_points={self.min_train_points} must be >= 20")


def _design(frame: pd.DataFrame, siblings: list[str], center: np.ndarray, scale: np.ndarray
            ) -> np.ndarray:
    standard = (frame[siblings].to_numpy(dtype="float64") - center) / scale
    return np.hstack([standard, standard**2, np.ones((len(frame), 1))])


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    gram = x.T @ x + penalty * np.eye(x.shape[1])
    gram[-1, -1] -= penalty  # leave the intercept unpenalised
    return np.linalg.solve(gram, x.T @ y)


@dataclasses.dataclass
class MetricModel:
    """How one metric follows its siblings."""

    siblings: list[str]
    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    residual_scale: float
    r2: float
    calibrator: TailCalibrator

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return _design(frame, self.siblings, self.center, self.scale) @ self.coef


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    metric: str
    direction: str
    normal_siblings: list[str]
    text: str


@register
class CorrelationDetector(Model):
    """Scores each metric of a service by how far it strays from what its siblings predict.

    ``fit`` takes a wide frame (one column per metric, a UTC DatetimeIndex);
    ``score`` returns calibrated scores in [0, 1] per modelled metric (NaN
    where the metric or one of its siblings is missing). High means the metric
    no longer moves with its siblings, in either direction.
    """

    name: ClassVar[str] = "correlation"
    kind: ClassVar[catalog.Kind] = "service_detector"
    config_class = CorrelationDetectorConfig
    config: CorrelationDetectorConfig
    supports_multivariate: ClassVar[bool] = True
    # Its state is nested per metric: all of it in state.json, no arrays.npz.
    stores_arrays: ClassVar[bool] = False

    @staticmethod
    def _check(frame: Any, name: str) -> pd.DataFrame:
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
        if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
            raise ValueError(f"{name} must have a timezone-aware DatetimeIndex")
        if frame.shape[1] < 2:
            raise ValueError(f"{name} has {frame.shape[1]} metric(s); a correlation needs at least 2")
        return frame.astype("float64")

    def fit(self, history: pd.DataFrame) -> Self:
        """Model every metric its siblings explain well enough; others are left out."""
        frame = self._check(history, "history").iloc[-self.config.max_train_points :]
        models: dict[str, MetricModel] = {}
        r2_all: dict[str, float] = {}
        drivers = DEFAULT_DRIVERS if self.config.drivers is None else self.config.drivers
        for target in frame.columns:
            if target in drivers:
                siblings = [c for c in drivers[target] if c in frame.columns and c != target]
            else:
                siblings = [c for c in frame.columns if c != target]
            if not siblings:
                continue
            complete = frame[[target, *siblings]].dropna()
            if len(complete) < self.config.min_train_points:
                continue
            center = complete[siblings].median().to_numpy()
            scale = np.array([robust_scale(complete[s].to_numpy()) for s in siblings])
            cut = int(len(complete) * (1 - self.config.holdout_fraction))
            train, test = complete.iloc[:cut], complete.iloc[cut:]
            y_train, y_test = train[target].to_numpy(), test[target].to_numpy()
            coef = _ridge(_design(train, siblings, center, scale), y_train, self.config.ridge)
            predicted = _design(test, siblings, center, scale) @ coef
            variance = float(np.var(y_test))
            r2 = 1.0 - float(np.mean((y_test - predicted) ** 2)) / variance if variance > 0 else 0.0
            r2_all[str(target)] = r2
            if r2 < self.config.min_r2:
                continue
            held_out = y_test - predicted
            residual_scale = robust_scale(held_out)
            # Refit on everything for serving; calibrate on the held-out residuals.
            coef = _ridge(_design(complete, siblings, center, scale), complete[target].to_numpy(),
                          self.config.ridge)
            calibrator = TailCalibrator().fit(np.abs(held_out) / residual_scale)
            models[str(target)] = MetricModel(siblings, center, scale, coef, residual_scale, r2,
                                              calibrator)
        self.models_ = models
        self.r2_ = r2_all
        return self

    @property
    def metrics(self) -> list[str]:
        """The metrics this detector scores (those its siblings explain)."""
        self._check_fitted()
        return sorted(self.models_)

    def residuals(self, window: pd.DataFrame) -> dict[str, np.ndarray]:
        """Standardised residual per modelled metric whose siblings are all in ``window``."""
        self._check_fitted()
        frame = self._check(window, "window")
        out = {}
        for metric, model in self.models_.items():
            if metric not in frame.columns or not set(model.siblings) <= set(frame.columns):
                continue
            out[metric] = (frame[metric].to_numpy() - model.predict(frame)) / model.residual_scale
        return out

    def score(self, window: pd.DataFrame) -> pd.DataFrame:
        """Calibrated scores per modelled metric present with all its siblings."""
        scores = {
            metric: self.models_[metric].calibrator.transform(np.abs(z))
            for metric, z in self.residuals(window).items()
        }
        return pd.DataFrame(scores, index=window.index)

    def expected(self, window: pd.DataFrame) -> dict[str, np.ndarray]:
        """What each metric should be, given its siblings."""
        self._check_fitted()
        frame = self._check(window, "window")
        return {m: model.predict(frame) for m, model in self.models_.items()
                if m in frame.columns and set(model.siblings) <= set(frame.columns)}

    def diagnose(
        self,
        metric: str,
        residual: float,
        sibling_scores: dict[str, float],
        threshold: float = EXPECTED_RANGE_SCORE,
    ) -> Diagnosis:
        """A one-line reading of a metric its siblings no longer explain.

        ``sibling_scores`` are the siblings' own single-metric scores at the
        same instant: siblings below ``threshold`` count as normal.
        """
        direction = "high" if residual > 0 else "low"
        normal = sorted(s for s, v in sibling_scores.items() if not v >= threshold)
        if normal:
            text = f"{metric} {direction} while {' and '.join(normal)} " + (
                "is normal" if len(normal) == 1 else "are normal")
        else:
            text = f"{metric} {direction}, out of line with {', '.join(sorted(sibling_scores))}"
        suspect = SUSPECTS.get(metric)
        return Diagnosis(metric, direction, normal, f"{text}: {suspect}" if suspect else text)

    # -- state: nested per metric, so not the default ----------------------------------
    @classmethod
    def _saved_description(cls) -> str:
        return "a correlation detector"

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state = {
            "r2_": self.r2_,
            "models_": {
                m: {"siblings": mm.siblings, "center": mm.center.tolist(),
                    "scale": mm.scale.tolist(), "coef": mm.coef.tolist(),
                    "residual_scale": mm.residual_scale, "r2": mm.r2,
                    "calibrator": mm.calibrator.to_dict()}
                for m, mm in self.models_.items()
            },
        }
        return state, {}

    def set_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.r2_ = {k: float(v) for k, v in params["r2_"].items()}
        self.models_ = {
            m: MetricModel(
                siblings=list(s["siblings"]), center=np.asarray(s["center"]),
                scale=np.asarray(s["scale"]), coef=np.asarray(s["coef"]),
                residual_scale=float(s["residual_scale"]), r2=float(s["r2"]),
                calibrator=TailCalibrator.from_dict(s["calibrator"]),
            )
            for m, s in params["models_"].items()
        }
