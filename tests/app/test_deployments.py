"""Deployment records: created pending from a ready artifact of the tenant; get, list, delete;
an archive that is not a valid artifact ends `failed` with a message."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import TenantKey
from tests.app.deploy_util import serving, wait_settled

pytestmark = pytest.mark.unit


def test_deployment_lifecycle(
    client: TestClient,
    tenant_a: TenantKey,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    artifact_id, _ = add_artifact(db, settings, tenant_a.id, job_a, tmp_path)
    body = {"artifact_id": artifact_id, "max_batch_size": 16}
    headers = {**tenant_a.headers, "Idempotency-Key": "dep-1"}
    r = client.post("/v1/deployments", headers=headers, json=body)
    assert r.status_code == 201, r.text
    dep = r.json()
    assert dep["status"] == "pending"
    # The effective configuration is recorded: what was asked, the server default otherwise.
    assert dep["config"] == {"max_batch_size": 16, "max_wait_ms": settings.inference_max_wait_ms}
    again = client.post("/v1/deployments", headers=headers, json=body)
    assert again.json()["id"] == dep["id"]

    # The fake archive (gzip magic, then junk) matches its recorded sha256 but is no tar:
    # the warm-up fails with a message and loads nothing.
    settled = wait_settled(client, tenant_a, dep["id"])
    assert settled["status"] == "failed"
    assert "unsafe archive" in settled["error_message"]
    assert not serving(client).is_loaded(dep["id"])
    r = client.post(
        f"/v1/deployments/{dep['id']}/predict", headers=tenant_a.headers, json={"inputs": ["x"]}
    )
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "deployment_failed"

    listed = client.get("/v1/deployments", headers=tenant_a.headers).json()["data"]
    assert [d["id"] for d in listed] == [dep["id"]]
    assert (
        client.delete(f"/v1/deployments/{dep['id']}", headers=tenant_a.headers).status_code == 204
    )
    assert client.get(f"/v1/deployments/{dep['id']}", headers=tenant_a.headers).status_code == 404


def test_refusals(
    client: TestClient,
    tenant_a: TenantKey,
    tenant_b: TenantKey,
    job_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    pending_id, _ = add_artifact(db, settings, tenant_a.id, job_a, tmp_path, ready=False)
    r = client.post("/v1/deployments", headers=tenant_a.headers, json={"artifact_id": pending_id})
    assert r.status_code == 409
    r = client.post("/v1/deployments", headers=tenant_b.headers, json={"artifact_id": pending_id})
    assert r.status_code == 404
    r = client.post(
        "/v1/deployments",
        headers=tenant_a.headers,
        json={"artifact_id": pending_id, "status": "ready"},
    )
    assert r.status_code == 422
    assert "unknown field 'status'" in r.json()["error"]["message"]
    r = client.post(
        "/v1/deployments",
        headers=tenant_a.headers,
        json={"artifact_id": pending_id, "max_batch_size": 0},
    )
    assert r.status_code == 422
    assert "max_batch_size" in r.json()["error"]["message"]
