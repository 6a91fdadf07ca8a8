"""Property-based tests of the API against its own OpenAPI schema (schemathesis, every check).

Every operation is called with generated requests, valid and invalid, and every check
schemathesis has runs on each answer (as ``st run --checks all``): no 5xx, every answer
matches the schema (status code documented, body shape, content type, headers), invalid
requests are refused, valid ones accepted, auth is enforced. Besides, every number in an
answer is finite.

A valid request may still be refused on a rule the schema states in a description but JSON
Schema cannot express (a rule joining two fields, or the loaded model's own limits). Those
rules are listed below, one pattern each for the exact message it gives; a refusal that
matches none of them fails the test like any other.

The app is built at import, as schemathesis parametrizes at collection time: a small bundle
fitted in-process on the series the schema's examples name, and an empty registry in a
temporary folder.
"""

from __future__ import annotations

import json
import re
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
from tests.serving.conftest import daily_series, non_finite_numbers

_STORE = Path(tempfile.mkdtemp(prefix="aiops-fuzz-"))
_TOKEN, _ENTRY = new_token("fuzzer", ["score", "forecast", "admin"])
#: The series the schema's examples name (checkout's request rate and CPU), and one more.
_TRAINED = [("checkout", "request_rate"), ("checkout", "cpu_utilization"), ("web", "cpu")]

_HISTORY = [  # History / SeriesWindow: as many values as timestamps, strictly increasing
    r"(series\.\d+|history): timestamps has \d+ items but values has \d+",
    r"(series\.\d+|history)\.timestamps: timestamps\[\d+\] \(\S+\) is not after "
    r"timestamps\[\d+\]; timestamps must be strictly increasing",
    # ... or a regular grid instead: start and step_s, not both ways, its last time supported
    r"(series\.\d+|history): send timestamps, or start and step_s for a regular grid "
    r"\((start|step_s|start and step_s) missing\)",
    r"(series\.\d+|history): send either timestamps or start and step_s, not both \(got "
    r"timestamps and (start|step_s|start and step_s)\)",
    r"(series\.\d+|history): the grid's last time \(.+\) falls after the supported years "
    r"1970 to 2261",
    r"(series\.\d+|history)\.step_s: step_s=\S+ is not a whole number of microseconds",
]
_FORECAST = [
    *_HISTORY,
    # history is required for a series the model has no forecaster of ...
    r".+/.+: no forecaster is trained for .+/.+; send its history \(timestamps and "
    r"values\) to forecast from it",
    # ... and must be long enough for the forecaster fitted on it
    r".+/.+: history has \d+ (points|finite values); (seasonal_naive )?needs? at least \d+",
    r".+/.+: history holds \d+ pairs of points one season \(\d+ steps\) apart; the "
    r"seasonal naive forecast needs at least 5",
    r".+/.+: history holds no finite value to forecast from",
    # horizon: at most the trained forecaster's max horizon, and ending by 2262-04-11
    r".+/.+: horizon=\d+ must lie in \[1, \d+\]",
    r".+/.+: horizon=\d+ steps after (\S+|the training data) run past 2262-04-11, the last "
    r"timestamp supported; ask for fewer steps",
]
#: Per operation, the messages of the rules a schema-valid request may break (422), and of
#: the configured size limits (413: the settings, not the schema, hold them).
CROSS_FIELD_RULES = {
    "/v1/score": [
        *_HISTORY,
        r"series\[\d+\] repeats .+/.+ of series\[\d+\]; send each series once per request",
        # detectors: only those trained for the series
        r"series\[\d+\] \(.+/.+\): detector\(s\) \[.*\] not trained for .+/.+; "
        r"available: \[.*\]",
    ],
    "/v1/forecast": _FORECAST,
    "/v1/recommendations": [
        *_FORECAST,
        r"min_replicas=\d+ is above max_replicas=\d+",
        r"peak_utilisation=\S+ is below target_utilisation=\S+",
        r"events\.\d+: event end \S+ is not after its start \S+",
        r"the forecast holds no finite value \(a history of gaps\?\); no plan can be made "
        r"from it",
    ],
    "/v1/cluster-plan": [r"services repeat in the plan: \[.*\]"],
}
SIZE_LIMITS = [
    r"series has \d+ windows; at most \d+ per request",
    r"series\[\d+\] has \d+ points; at most \d+ per series",
    r"history has \d+ points; at most \d+",
    r".+/.+: history spans [\d,]+ steps of \S+ s for \d+ points; at most [\d,]+ .*",
]


def _app():
    history = daily_series(288 * 4)
    detectors = {"static_threshold": StaticThresholdDetector().fit(history),
                 "dynamic_threshold": DynamicThresholdDetector().fit(history)}
    forecaster = SeasonalNaiveForecaster(SeasonalNaiveForecaster.config_class(max_horizon=288))
    bundle = DetectorBundle({key: detectors for key in _TRAINED},
                            forecasters={key: forecaster.fit(history) for key in _TRAINED})
    model = LoadedModel(bundle, "fuzz-detectors", "1", "champion", time.time())
    settings = Settings(tracking_uri=f"sqlite:///{_STORE / 'mlflow.db'}", model_name="fuzz",
                        max_points_per_series=2000, max_series_per_request=5,
                        cache_dir=_STORE / "cache", tokens=TokenStore([_ENTRY]))
    return create_app(settings, model)


def _details(response) -> list[str]:
    try:
        detail = json.loads(response.content).get("detail")
    except (ValueError, AttributeError):
        return []
    return [detail] if isinstance(detail, str) else list(detail or [])


def _breaks_only_stated_rules(response, path: str) -> bool:
    rules = {422: CROSS_FIELD_RULES.get(path, []), 413: SIZE_LIMITS}.get(response.status_code)
    details = _details(response)
    return bool(rules and details) and all(
        any(re.fullmatch(rule, detail, flags=re.DOTALL) for rule in rules) for detail in details)


def valid_data_is_accepted_but_for_the_stated_rules(ctx, response, case):
    """``positive_data_acceptance``, except for a refusal on the rules listed above."""
    if _breaks_only_stated_rules(response, case.operation.path):
        return None
    return positive_data_acceptance(ctx, response, case)


def every_number_is_finite(ctx, response, case):
    """No answer holds an infinite or NaN number (``1e999`` reads back as infinity)."""
    if "json" not in response.headers.get("content-type", [""])[0]:
        return None
    found = non_finite_numbers(json.loads(response.content))
    assert not found, f"non-finite numbers at {found[:5]}"


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_check_passes_on_every_operation(case):
    # The first registry read creates its SQLite store, which takes seconds on a busy machine.
    case.call_and_validate(headers={"Authorization": f"Bearer {_TOKEN}"}, timeout=60,
                           excluded_checks=[positive_data_acceptance],
                           additional_checks=[valid_data_is_accepted_but_for_the_stated_rules,
                                              every_number_is_finite])


def test_the_stated_rules_are_in_the_schema():
    """Each rule above is written where a caller reads the schema."""
    spec = json.dumps(schema.raw_schema)
    for phrase in ("as many values as timestamps", "Strictly increasing", "not both ways",
                   "the grid's last time too", "a whole number of microseconds",
                   "At most max_replicas", "at least target_utilisation",
                   "``end`` must be after ``start``", "Each service once",
                   "required for a series the model does not know",
                   "at most its forecaster's max horizon", "once per request",
                   "Detector names to use"):
        assert phrase in spec, phrase
