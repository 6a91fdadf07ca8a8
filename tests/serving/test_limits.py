"""Request limits that hold however the body is sent (Content-Length or chunked)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serving.app import create_app

LIMIT = 200_000
CHUNK = 10_000


def test_a_chunked_body_past_the_limit_is_413(settings, loaded_model):
    """Over HTTP (tests/serving/test_serve_http.py) the replica also stops reading it."""
    client = TestClient(create_app(settings.replace(max_body_bytes=LIMIT),
                                   loaded_model), raise_server_exceptions=False)

    def chunks():  # no Content-Length: httpx sends this as a chunked body
        yield b'{"series": ['
        for _ in range(100):  # 1 MB in all
            yield b" " * CHUNK
        yield b"]}"

    response = client.post("/v1/score", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert f"at most {LIMIT} accepted" in response.json()["detail"]
    assert response.json()["request_id"]


def test_a_chunked_body_within_the_limit_is_scored(settings, loaded_model, history):
    import json

    from tests.serving.conftest import window_body

    client = TestClient(create_app(settings.replace(max_body_bytes=LIMIT),
                                   loaded_model))
    body = json.dumps({"series": [window_body(history.iloc[-60:])]}).encode()
    response = client.post("/v1/score", content=iter([body[:100], body[100:]]),
                           headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
