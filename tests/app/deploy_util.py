"""Helpers for the deployment tests: wait for warm-up, the app's serving manager."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from app.serving.manager import ServingManager
from tests.app.conftest import TenantKey

WARM_UP_DEADLINE_S = 60.0


def wait_settled(client: TestClient, tenant: TenantKey, deployment_id: str) -> dict[str, Any]:
    """Poll GET until the warm-up has ended (ready or failed)."""
    deadline = time.monotonic() + WARM_UP_DEADLINE_S
    while True:
        r = client.get(f"/v1/deployments/{deployment_id}", headers=tenant.headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] != "pending":
            return body
        assert time.monotonic() < deadline, f"deployment still pending: {body}"
        time.sleep(0.05)


def serving(client: TestClient) -> ServingManager:
    manager: ServingManager = client.app.state.serving  # type: ignore[attr-defined]
    return manager


def deploy(client: TestClient, tenant: TenantKey, artifact_id: str, **config: Any) -> str:
    r = client.post(
        "/v1/deployments", headers=tenant.headers, json={"artifact_id": artifact_id, **config}
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"
    return str(r.json()["id"])


def predict(client: TestClient, tenant: TenantKey, deployment_id: str, inputs: Any) -> Any:
    return client.post(
        f"/v1/deployments/{deployment_id}/predict", headers=tenant.headers, json={"inputs": inputs}
    )
