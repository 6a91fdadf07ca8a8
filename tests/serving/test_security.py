"""Bearer tokens and roles, the audit log, body limits, /metrics and log hygiene."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from serving.app import create_app
from serving.observability import configure_logging
from serving.security import ScrubFilter, TokenConfigError, TokenStore, new_token, scrub
from tests.serving.conftest import daily_series, window_body

SCORE_TOKEN, SCORE_ENTRY = new_token("alerting", ["score"])
FORECAST_TOKEN, FORECAST_ENTRY = new_token("autoscaler", ["forecast"])
ADMIN_TOKEN, ADMIN_ENTRY = new_token("ana", ["admin"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def secured(settings, loaded_model, tmp_path, mlflow_store):
    tokens = TokenStore([SCORE_ENTRY, FORECAST_ENTRY, ADMIN_ENTRY])
    secure = settings.replace(tokens=tokens, audit_log=tmp_path / "audit.jsonl",
                                 max_body_bytes=200_000, tracking_uri=mlflow_store)
    return TestClient(create_app(secure, loaded_model), raise_server_exceptions=False)


@pytest.fixture
def body():
    return {"series": [window_body(daily_series(288 * 6, seed=1).iloc[-60:])]}


def test_no_token_is_401_a_token_without_the_role_is_403(secured, body):
    missing = secured.post("/v1/score", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["detail"] == "a bearer token is required"
    unknown = secured.post("/v1/score", json=body, headers=bearer("nva_" + "x" * 40))
    assert unknown.status_code == 401 and "not known" in unknown.json()["detail"]
    wrong = secured.post("/v1/score", json=body, headers=bearer(FORECAST_TOKEN))
    assert wrong.status_code == 403
    assert "'autoscaler' lacks the role 'score'" in wrong.json()["detail"]
    assert secured.post("/v1/score", json=body, headers=bearer(SCORE_TOKEN)).status_code == 200
    forecast = {"service": "web", "metric": "cpu", "horizon": 12}
    assert secured.post("/v1/forecast", json=forecast,
                        headers=bearer(SCORE_TOKEN)).status_code == 403
    assert secured.post("/v1/forecast", json=forecast,
                        headers=bearer(FORECAST_TOKEN)).status_code == 200
    # Health, readiness and metrics stay open for probes and scrapers.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert secured.get(path).status_code == 200
    assert secured.get("/readyz").json()["auth"] == "bearer tokens"


def test_admin_actions_are_audited(secured, settings, tmp_path, mlflow_store):
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    client.create_registered_model(settings.model_name)
    for _ in range(2):
        client.create_model_version(settings.model_name, source=str(tmp_path))
    assert secured.get("/v1/admin/models", headers=bearer(SCORE_TOKEN)).status_code == 403
    listed = secured.get("/v1/admin/models", headers=bearer(ADMIN_TOKEN))
    assert listed.status_code == 200, listed.text
    assert [v["version"] for v in listed.json()["versions"]] == ["2", "1"]

    promoted = secured.post("/v1/admin/promote", headers=bearer(ADMIN_TOKEN),
                            json={"version": "2", "reason": "better on the weekend"})
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["versions"][0]["aliases"] == ["champion"]
    assert client.get_model_version(settings.model_name, "2").tags["champion.by"] == "ana"
    missing = secured.post("/v1/admin/promote", headers=bearer(ADMIN_TOKEN),
                           json={"version": "9", "reason": "typo"})
    assert missing.status_code == 404 and "no version '9'" in missing.json()["detail"]
    reload = secured.post("/v1/admin/reload", headers=bearer(ADMIN_TOKEN))
    assert reload.status_code == 409  # started from a bundle, not a registry

    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["who"], e["action"]) for e in lines] == [
        ("alerting", "list_models"), ("ana", "list_models"), ("ana", "promote"),
        ("ana", "promote"), ("ana", "reload")]
    assert lines[0]["result"].startswith("refused (403)")
    assert lines[2]["result"] == "champion None -> 2"
    assert lines[2]["detail"] == {"version": "2", "reason": "better on the weekend"}
    assert lines[3]["result"].startswith("refused")
    assert all(e["at"].endswith("+00:00") for e in lines)


def test_bodies_past_the_limit_are_413(secured):
    huge = b"{" + b" " * 300_000 + b"}"
    response = secured.post("/v1/score", content=huge, headers={
        **bearer(SCORE_TOKEN), "content-type": "application/json"})
    assert response.status_code == 413 and "at most 200000" in response.json()["detail"]


def test_metrics_count_requests_latency_scores_and_the_model(client, body):
    assert client.post("/v1/score", json=body).status_code == 200
    assert client.post("/v1/score", json={"series": []}).status_code in (200, 422)
    client.post("/v1/forecast", json={"service": "web", "metric": "cpu", "horizon": 10**6})
    text = client.get("/metrics").text
    assert 'aiops_requests_total{endpoint="/v1/score",method="POST",status="200"} 1.0' in text
    assert 'aiops_requests_total{endpoint="/v1/forecast",method="POST",status="422"} 1.0' in text
    assert 'aiops_request_duration_seconds_bucket{endpoint="/v1/score",le="+Inf"}' in text
    assert 'aiops_model_info{alias="champion",name="test-detectors",version="3"} 1.0' in text
    assert "aiops_series_max_score_count 1.0" in text
    age = next(line for line in text.splitlines()
               if line.startswith("aiops_seconds_since_model_reload "))
    assert float(age.split()[1]) >= 0


def test_token_entries_are_checked_and_named():
    with pytest.raises(TokenConfigError, match=r"entry 1 \(bob\): 'sha256'"):
        TokenStore([SCORE_ENTRY, {"name": "bob", "sha256": "secret", "roles": ["score"]}])
    with pytest.raises(TokenConfigError, match=r"entry 0 \(bob\): 'roles'"):
        TokenStore([{**SCORE_ENTRY, "name": "bob", "roles": ["root"]}])
    with pytest.raises(TokenConfigError, match="AIOPS_TOKENS: not JSON"):
        TokenStore.from_sources(None, "[{")
    assert TokenStore.from_sources(None, json.dumps([ADMIN_ENTRY])).authenticate(ADMIN_TOKEN).name == "ana"
    # Only the hash is stored.
    assert ADMIN_TOKEN not in json.dumps(ADMIN_ENTRY)


def test_logs_carry_no_tokens_and_no_personal_values(caplog):
    line = (f"Authorization: Bearer {SCORE_TOKEN} user_id=u-48151 from 10.2.3.4 "
            "mail jane.doe@example.com token " + ADMIN_TOKEN)
    cleaned = scrub(line)
    for secret in (SCORE_TOKEN, ADMIN_TOKEN, "u-48151", "10.2.3.4", "jane.doe@example.com"):
        assert secret not in cleaned
    assert "Bearer [redacted]" in cleaned and cleaned.count("anon-") == 3
    assert scrub("user_id=u-48151") == scrub("user_id=u-48151"), "stable within a process"
    logger = logging.getLogger("serving.test-scrub")
    with caplog.at_level(logging.INFO, logger="serving.test-scrub"):
        caplog.handler.addFilter(ScrubFilter())
        logger.info("series labels %s", {"user": "jane.doe@example.com"})
    assert "jane.doe@example.com" not in caplog.text and "anon-" in caplog.text


def audit_lines(tmp_path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_refused_admin_attempts_are_audited_with_who_tried(secured, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="serving.access"):
        assert secured.get("/v1/admin/models").status_code == 401
        assert secured.post("/v1/admin/reload",
                            headers=bearer("nva_" + "x" * 40)).status_code == 401
        assert secured.post("/v1/admin/promote", headers=bearer(SCORE_TOKEN),
                            json={"version": "1", "reason": "r"}).status_code == 403
        assert secured.post("/v1/score", json={"series": []},
                            headers=bearer(FORECAST_TOKEN)).status_code == 403
    lines = audit_lines(tmp_path)
    assert [(e["who"], e["action"]) for e in lines] == [
        ("anonymous", "list_models"), ("unknown token", "reload"), ("alerting", "promote")]
    assert all(e["result"].startswith("refused") for e in lines)
    assert lines[0]["detail"] == {"method": "GET", "path": "/v1/admin/models"}
    assert "lacks the role 'admin'" in lines[2]["result"]
    text = (tmp_path / "audit.jsonl").read_text()
    assert SCORE_TOKEN not in text and "x" * 40 not in text
    # The access log names the caller wherever it is known.
    assert [r.principal for r in caplog.records if r.name == "serving.access"] == [
        "anonymous", "unknown token", "alerting", "autoscaler"]


def test_a_reason_holding_a_token_is_recorded_without_it(secured, settings, tmp_path,
                                                         mlflow_store):
    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    client.create_registered_model(settings.model_name)
    client.create_model_version(settings.model_name, source=str(tmp_path))
    reason = f"approved; my token is {ADMIN_TOKEN}, header Authorization: Bearer abc.def~1"
    assert secured.post("/v1/admin/promote", headers=bearer(ADMIN_TOKEN),
                        json={"version": "1", "reason": reason}).status_code == 200
    recorded = [(tmp_path / "audit.jsonl").read_text(),
                client.get_model_version(settings.model_name, "1").tags["champion.reason"],
                client.get_registered_model(settings.model_name).tags["champion_history"]]
    for text in recorded:
        assert ADMIN_TOKEN not in text and "abc.def~1" not in text
        assert "approved; my token is [redacted-token]" in text


@pytest.mark.parametrize("sent", [SCORE_TOKEN, f"Bearer {SCORE_TOKEN}", "a" * 129, 'x"y',
                                  "jane.doe@example.com", "user_id_7", "10.2.3.4"],
                         ids=["token", "bearer", "long", "quote", "e-mail", "user-id", "ip"])
def test_a_request_id_that_is_not_a_plain_short_id_is_replaced(client, caplog, sent):
    with caplog.at_level(logging.INFO):
        response = client.get("/v1/recommendations/web/replicas",
                              headers={"x-request-id": sent})
    echoed = response.headers["x-request-id"]
    assert echoed != sent and re.fullmatch(r"[0-9a-f]{32}", echoed)
    assert response.json()["request_id"] == echoed
    logged = [r.request_id for r in caplog.records if hasattr(r, "request_id")]
    assert logged == [echoed]
    assert sent not in caplog.text


def test_a_plain_request_id_is_kept(client):
    sent = "trace-01H.x_" + "9" * 100
    response = client.get("/v1/recommendations/web/replicas", headers={"x-request-id": sent})
    assert response.headers["x-request-id"] == sent == response.json()["request_id"]


def test_logged_tracebacks_carry_no_tokens():
    configure_logging()
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_aiops", False))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        try:
            raise ValueError(f"bad header Authorization: Bearer {SCORE_TOKEN}")
        except ValueError:
            logging.getLogger("serving.test-traceback").exception("request failed")
    finally:
        handler.setStream(previous)
    entry = json.loads(stream.getvalue())
    assert "ValueError" in entry["error"] and SCORE_TOKEN not in stream.getvalue()
