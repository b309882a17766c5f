"""Liveness needs nothing; readiness checks the database and the broker and says what is down."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.main import create_app
from app.settings import Settings
from tests.doubles import RecordingJobQueue

pytestmark = pytest.mark.unit


def test_ready_with_the_embedded_sqlite_broker(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_not_ready_names_the_broker(
    settings: Settings, db: sessionmaker[Session], tmp_path: Path
) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down, job_queue=RecordingJobQueue())) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("unreachable")
    assert "broker" in body["error"]["message"]


def test_unknown_route_uses_the_error_shape(client: TestClient) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/jobs/{job_id}/events/stream" in paths


def test_the_api_does_not_import_the_ml_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys, app.main\n"
        "app.main.create_app\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
