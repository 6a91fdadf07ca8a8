"""The API's contract: ``/openapi.json`` is byte for byte the committed document.

Refactoring the service must not change what callers were promised. A deliberate
change to the API rewrites the document with
``AIOPS_WRITE_OPENAPI=1 python -m pytest tests/serving/test_openapi_document.py``
and commits it beside the change, so that the diff shows what callers will see.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

DOCUMENT = Path(__file__).with_name("openapi.json")


def test_openapi_document_is_the_committed_one():
    with TestClient(create_app(Settings())) as client:
        served = client.get("/openapi.json").content
    if os.environ.get("AIOPS_WRITE_OPENAPI") == "1":
        DOCUMENT.write_bytes(served)
    assert served == DOCUMENT.read_bytes(), (
        "the OpenAPI document changed; if the API change is deliberate, rewrite "
        f"{DOCUMENT.name} (see this module's docstring) and commit it")
