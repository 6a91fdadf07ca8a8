"""Property-based tests of the API against its own OpenAPI schema (schemathesis).

Every operation is called with generated requests: none may answer 5xx, and every
answer must match the schema (status code documented, body shape, content type).
The app is built at import, as schemathesis parametrizes at collection time: a small
bundle fitted in-process and an empty registry in a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from models import DynamicThresholdDetector, StaticThresholdDetector
from models.bundle import DetectorBundle
from models.forecast import SeasonalNaiveForecaster
from serving.app import create_app
from serving.loader import LoadedModel
from serving.security import TokenStore, new_token
from serving.settings import Settings
from tests.serving.conftest import daily_series

_STORE = Path(tempfile.mkdtemp(prefix="aiops-fuzz-"))
_TOKEN, _ENTRY = new_token("fuzzer", ["score", "forecast", "admin"])


def _app():
    history = daily_series(288 * 4)
    detectors = {"static_threshold": StaticThresholdDetector().fit(history),
                 "dynamic_threshold": DynamicThresholdDetector().fit(history)}
    forecaster = SeasonalNaiveForecaster(SeasonalNaiveForecaster.config_class(max_horizon=288))
    bundle = DetectorBundle({("web", "cpu"): detectors},
                            forecasters={("web", "cpu"): forecaster.fit(history)})
    model = LoadedModel(bundle, "fuzz-detectors", "1", "champion", time.time())
    settings = Settings(tracking_uri=f"sqlite:///{_STORE / 'mlflow.db'}", model_name="fuzz",
                        max_points_per_series=2000, max_series_per_request=5,
                        cache_dir=_STORE / "cache", tokens=TokenStore([_ENTRY]))
    return create_app(settings, model)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_5xx_and_every_answer_matches_the_schema(case):
    # Some schema-valid requests are refused on meaning the schema cannot express (a history
    # too short to forecast from, an event that ends before it starts): a 422 with the
    # reason, which the positive-data check would count as a failure.
    case.call_and_validate(headers={"Authorization": f"Bearer {_TOKEN}"},
                           excluded_checks=[positive_data_acceptance])
