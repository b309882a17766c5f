"""Deployment records: created pending from a ready artifact of the tenant; get, list, delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import TenantKey

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
    assert dep["config"] == {"max_batch_size": 16}
    again = client.post("/v1/deployments", headers=headers, json=body)
    assert again.json()["id"] == dep["id"]

    listed = client.get("/v1/deployments", headers=tenant_a.headers).json()["data"]
    assert [d["id"] for d in listed] == [dep["id"]]
    assert client.get(f"/v1/deployments/{dep['id']}", headers=tenant_a.headers).status_code == 200
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
