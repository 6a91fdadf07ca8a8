"""The HTTP contract of the plain FastAPI app: answers, validation and error mapping."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.serving.conftest import daily_series, window_body


def test_score_finds_the_planted_spike_and_names_the_model(client, live_window):
    response = client.post("/v1/score", json={"series": [window_body(live_window)]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "test-detectors", "version": "3", "alias": "champion"}
    (result,) = body["results"]
    assert result["known_series"] is True
    assert len(result["scores"]) == 360
    flagged = {a["timestamp"] for a in result["anomalies"]}
    assert live_window.index[200].strftime("%Y-%m-%dT%H:%M:%SZ") in flagged
    spike = next(a for a in result["anomalies"] if a["value"] == pytest.approx(live_window.iloc[200]))
    assert spike["value"] > spike["expected_high"]
    assert "above the expected range" in spike["reason"]
    assert set(spike["detectors"]) == {"static_threshold", "dynamic_threshold"}
    # A spike is rare: most of the window must stay quiet.
    assert len(result["anomalies"]) < 0.05 * 360


def test_gaps_get_no_score_and_are_never_anomalous(client, live_window):
    window = live_window.copy()
    window.iloc[50:55] = np.nan
    body = client.post("/v1/score", json={"series": [window_body(window)]}).json()
    scores = body["results"][0]["scores"]
    assert scores[50:55] == [None] * 5
    assert all(s is not None for s in scores[:50])


def test_unseen_series_is_scored_by_the_window_baseline(client, live_window):
    body = client.post(
        "/v1/score", json={"series": [window_body(live_window, service="new", metric="thing")]}
    ).json()
    (result,) = body["results"]
    assert result["known_series"] is False
    assert result["detectors"] == ["window_baseline"]
    assert len(result["scores"]) == 360


def test_many_series_in_one_request(client, live_window):
    series = [window_body(live_window), window_body(live_window, service="other")]
    body = client.post("/v1/score", json={"series": series}).json()
    assert [r["service"] for r in body["results"]] == ["web", "other"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b["series"][0]["values"].pop(), "timestamps has 360 items but values has 359"),
        (lambda b: b["series"][0]["timestamps"].__setitem__(3, "2026-01-10T00:00:00"),
         "series.0.timestamps: timestamps[3] has no timezone"),
        (lambda b: b["series"][0]["timestamps"].__setitem__(3, b["series"][0]["timestamps"][1]),
         "timestamps[3]"),
        (lambda b: b["series"][0]["values"].__setitem__(7, "abc"), "series.0.values.7"),
        (lambda b: b["series"][0].pop("metric"), "series.0.metric"),
        (lambda b: b.update(threshold=1.5), "threshold"),
        (lambda b: b.update(series=[]), "series"),
        (lambda b: b.update(detectors=["nope"]), "detector(s) ['nope'] not trained for web/cpu"),
    ],
)
def test_bad_requests_get_422_naming_the_field(client, live_window, mutate, expected):
    body = {"series": [window_body(live_window)]}
    mutate(body)
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422, response.text
    assert expected in str(response.json()["detail"])
    assert response.json()["request_id"]


def test_nan_and_infinity_literals_are_refused(client, live_window):
    text = '{"series": [{"service": "web", "metric": "cpu", "timestamps": ["2026-01-10T00:00:00Z"], "values": [NaN]}]}'
    response = client.post("/v1/score", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "send null for a missing value" in str(response.json()["detail"])


def test_limits_give_413(client, live_window):
    too_many = {"series": [window_body(live_window)] * 6}
    response = client.post("/v1/score", json=too_many)
    assert response.status_code == 413
    assert "at most 5" in response.json()["detail"]
    long = daily_series(2001)
    response = client.post("/v1/score", json={"series": [window_body(long)]})
    assert response.status_code == 413
    assert "2001 points" in response.json()["detail"]


def test_without_a_model_the_service_is_alive_but_not_ready(settings):
    client = TestClient(create_app(settings, None))
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    window = window_body(daily_series(10))
    assert client.post("/v1/score", json={"series": [window]}).status_code == 503


def test_unexpected_errors_are_500_without_internals(settings, loaded_model, live_window,
                                                      monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(loaded_model.bundle, "score", explode)
    client = TestClient(create_app(settings, loaded_model), raise_server_exceptions=False)
    response = client.post("/v1/score", json={"series": [window_body(live_window)]},
                           headers={"x-request-id": "req-42"})
    assert response.status_code == 500
    assert "secret" not in response.text
    assert response.json()["request_id"] == "req-42"


def test_readyz_and_openapi(client):
    ready = client.get("/readyz").json()
    assert ready["model"]["version"] == "3"
    assert ready["n_series"] == 1
    spec = client.get("/openapi.json").json()
    assert "/v1/score" in spec["paths"]
    assert "422" in spec["paths"]["/v1/score"]["post"]["responses"]


def test_alarmed_points_come_back_as_one_incident_with_a_severity(client, live_window):
    window = live_window.copy()
    window.iloc[200:204] += 60  # four minutes of a far-out value: one incident, not four
    body = client.post("/v1/score", json={"series": [window_body(window)]}).json()
    (result,) = body["results"]
    at = window.index[200].strftime("%Y-%m-%dT%H:%M:%SZ")
    planted = [i for i in result["incidents"] if i["start"] <= at <= i["end"]]
    assert len(planted) == 1
    incident = planted[0]
    assert incident["n_points"] >= 4
    assert incident["severity"] in {"P0", "P1", "P2", "P3"}
    assert incident["peak_value"] > 100
    assert "alarmed point" in incident["reason"]


def test_alarm_policy_from_a_file_is_validated(tmp_path, monkeypatch):
    from serving.settings import Settings

    policy = tmp_path / "policy.json"
    policy.write_text('{"merge_gap_s": 60, "criticality": {"cpu": 1}}')
    monkeypatch.setenv("AIOPS_ALARM_POLICY", str(policy))
    assert Settings.from_env().alarm_policy.merge_gap_s == 60
    policy.write_text('{"merge_gap": 60}')
    with pytest.raises(ValueError, match=r"policy\.json.*unknown AlarmPolicy field"):
        Settings.from_env()


@pytest.fixture(scope="module")
def service_client():
    """A bundle for one service of three metrics, with its correlation detector."""
    import time as clock

    from models import DynamicThresholdDetector
    from models.bundle import DetectorBundle
    from models.correlation import CorrelationDetector
    from serving.loader import LoadedModel
    from serving.settings import Settings
    from tests.models.test_correlation import service_frame

    history = service_frame().drop(columns="unrelated")
    detectors = {("api", m): {"dynamic_threshold": DynamicThresholdDetector().fit(history[m])}
                 for m in history.columns}
    bundle = DetectorBundle(detectors,
                            service_detectors={"api": CorrelationDetector().fit(history)})
    model = LoadedModel(bundle, "test-detectors", "4", "champion", clock.time())
    settings = Settings(tracking_uri="sqlite:///unused.db")
    return TestClient(create_app(settings, model)), service_frame


def test_latency_up_cpu_normal_is_one_service_incident_with_a_diagnosis(service_client):
    client, service_frame = service_client
    window = service_frame(seed=5, start="2026-01-09").iloc[:120].drop(columns="unrelated")
    window.iloc[60:80, window.columns.get_loc("latency_p99")] *= 1.6
    body = {"series": [window_body(window[m], service="api", metric=m) for m in window.columns]}
    response = client.post("/v1/score", json=body)
    assert response.status_code == 200, response.text
    incidents = response.json()["service_incidents"]
    planted = [i for i in incidents if i["peak_metric"] == "latency_p99"]
    assert len(planted) == 1, incidents
    (incident,) = planted
    assert incident["service"] == "api"
    assert incident["start"] <= window.index[62].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert incident["peak_value"] > incident["expected_value"] * 1.3
    assert "latency_p99 high while" in incident["diagnosis"]
    assert "suspect network or a downstream dependency" in incident["diagnosis"]


def test_without_all_siblings_there_is_no_service_incident(service_client):
    client, service_frame = service_client
    window = service_frame(seed=5).iloc[:120]
    body = {"series": [window_body(window["latency_p99"], service="api", metric="latency_p99")]}
    assert client.post("/v1/score", json=body).json()["service_incidents"] == []


def test_a_series_sent_twice_is_refused(client, live_window):
    body = {"series": [window_body(live_window), window_body(live_window)]}
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert "series[1] repeats web/cpu of series[0]" in response.json()["detail"]


def test_incidents_come_as_alertmanager_alerts(client):
    window = daily_series(288 * 6, seed=1).iloc[-360:].copy()
    window.iloc[100] += 60  # over long before the window ends: resolved
    window.iloc[-1] += 60   # at the last point: firing
    first = client.post("/v1/score", json={"series": [window_body(window)]}).json()
    alerts = first["alerts"]
    assert {a["status"] for a in alerts} == {"firing", "resolved"}
    firing = next(a for a in alerts if a["status"] == "firing")
    resolved = next(a for a in alerts if a["status"] == "resolved")
    assert firing["endsAt"].startswith("0001-01-01T00:00:00")
    assert firing["labels"] == {"alertname": "MetricAnomaly", "service": "web", "metric": "cpu",
                                "severity": firing["labels"]["severity"]}
    assert firing["labels"]["severity"] in {"P0", "P1", "P2", "P3"}
    assert "to" in firing["annotations"]["expected_range"]
    assert firing["annotations"]["description"].startswith("1 alarmed point(s) of cpu")
    assert firing["generatorURL"].endswith("/v1/score")
    stamp = window.index[100].strftime("%Y-%m-%dT%H:%M:%S")
    assert resolved["startsAt"].startswith(stamp)
    assert resolved["endsAt"].startswith(window.index[101].strftime("%Y-%m-%dT%H:%M:%S"))
    # The same alert in the next request keeps its fingerprint (labels alone, as Alertmanager).
    later = window.iloc[1:].copy()
    again = client.post("/v1/score", json={"series": [window_body(later)]}).json()["alerts"]
    assert firing["fingerprint"] in {a["fingerprint"] for a in again if a["status"] == "firing"}


def test_window_timestamps_become_a_utc_nanosecond_index_whatever_their_offset():
    import pandas as pd

    from serving.routes.deps import to_pandas
    from serving.schemas import History

    stamps = ["2026-03-29T00:59:59.999999Z", "2026-03-29T03:00:00+02:00",
              "2026-03-29T01:00:10.5-00:00", "2026-03-29T01:00:20Z"]
    window = to_pandas(History(timestamps=stamps, values=[1, None, 3, 4]))
    expected = pd.to_datetime(stamps, utc=True, format="ISO8601").as_unit("ns")
    assert window.index.equals(expected) and window.index.tz is not None
    np.testing.assert_array_equal(window.to_numpy(), [1.0, np.nan, 3.0, 4.0])


@pytest.mark.parametrize(
    ("position", "stamp"),
    [(-1, "9999-12-30T00:00:00Z"), (0, "0001-01-01T00:00:00Z"),
     (0, "1969-12-31T23:59:59Z"), (-1, "2262-01-01T00:00:00Z")],
)
def test_timestamps_outside_the_supported_years_are_refused_naming_the_item(client, live_window,
                                                                         position, stamp):
    # pandas holds nanoseconds in an int64: these would wrap (9999 came back as 1816).
    body = {"series": [window_body(live_window)]}
    body["series"][0]["timestamps"][position] = stamp
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    index = position % len(live_window)
    assert detail.startswith(f"series.0.timestamps.{index}: {stamp[:4]}"), detail
    assert "outside the supported years 1970 to 2261" in detail


def test_timestamps_at_the_ends_of_the_supported_years_come_back_as_sent(client):
    for start in ("1970-01-01T00:00:00Z", "2261-12-31T00:00:00Z"):
        window = daily_series(288, start=start, seed=1)
        window.iloc[-1] += 80
        body = client.post("/v1/score", json={"series": [window_body(window)]}).json()
        (alert,) = [a for a in body["alerts"] if a["status"] == "firing"]
        assert alert["startsAt"] == window.index[-1].strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_number_is_not_taken_for_a_timestamp(client):
    body = {"series": [{"service": "web", "metric": "cpu", "timestamps": ["1700000000"],
                        "values": [1.0]}]}
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert "series.0.timestamps.0: expected an ISO 8601 timestamp" in response.json()["detail"][0]


def test_the_schema_states_the_timestamp_range(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    window = schemas["SeriesWindow"]["properties"]
    (listed,) = [s for s in window["timestamps"]["anyOf"] if s["type"] == "array"]
    (start,) = [s for s in window["start"]["anyOf"] if s["type"] == "string"]
    for stamp in (listed["items"], start):
        assert "1970 to 2261" in stamp["description"]
        assert stamp["pattern"].startswith("^")
    assert "1970 to 2261" in schemas["ScheduledEventIn"]["properties"]["start"]["description"]


def test_window_values_beyond_the_largest_magnitude_are_refused(client, live_window):
    body = {"series": [window_body(live_window)]}
    body["series"][0]["values"][3] = -1e31
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0].startswith("series.0.values.3: ")
    assert "1e+30" in response.json()["detail"][0]


def test_unrelated_incidents_of_a_service_are_not_merged_and_keep_their_own_diagnosis(
        service_client):
    """Latency up, then 50 minutes later CPU up while load is normal: within the one-hour merge
    gap, but the first ended long before the second began, so they are two incidents."""
    client, service_frame = service_client
    window = service_frame(seed=5, start="2026-01-09").iloc[:120].drop(columns="unrelated")
    window.iloc[60:66, window.columns.get_loc("latency_p99")] *= 1.6
    window.iloc[76:82, window.columns.get_loc("cpu_utilization")] *= 1.8
    body = {"series": [window_body(window[m], service="api", metric=m) for m in window.columns]}
    incidents = client.post("/v1/score", json=body).json()["service_incidents"]
    assert len(incidents) == 2, incidents
    latency, cpu = sorted(incidents, key=lambda i: i["start"])
    assert latency["metrics"] == ["latency_p99"] and "cpu_utilization" in cpu["metrics"]
    assert latency["end"] < window.index[70].strftime("%Y-%m-%dT%H:%M:%SZ") <= cpu["start"]
    assert latency["diagnosis"].startswith("latency_p99 high while")
    assert cpu["diagnosis"] != latency["diagnosis"]  # its own reading, not the older one's
