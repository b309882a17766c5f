"""Point 6: tenant B, with tenant A's real ids, gets 404 from every route of the OpenAPI spec
that takes an id (every method), and no list, page or body ever shows A's objects.

The matrix is driven by `app.openapi()`: a new route joins it automatically. A route whose id
parameter the matrix cannot fill, or an id route hidden from the spec, fails the test, so a
route cannot escape the check by being new.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import TenantKey
from tests.app.model_archives import model_files, zip_bytes
from tests.reliability.harness import figure

pytestmark = pytest.mark.unit

ID_RE = re.compile(r"\b[a-z]{2,5}_[0-9a-f]{32}\b")
# Routes that answer before any tenant lookup, with no tenant data: nothing to isolate.
PUBLIC = {"/healthz", "/readyz", "/metrics"}


@pytest.fixture
def a_ids(
    client: TestClient,
    tenant_a: TenantKey,
    job_a: str,
    dataset_a: str,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> dict[str, str]:
    artifact_id, _ = add_artifact(db, settings, tenant_a.id, job_a, tmp_path)
    deployment = client.post(
        "/v1/deployments", headers=tenant_a.headers, json={"artifact_id": artifact_id}
    )
    assert deployment.status_code == 201, deployment.text
    model = client.post(
        "/v1/models",
        headers=tenant_a.headers,
        files={"file": ("m.zip", zip_bytes(model_files()), "application/zip")},
    )
    assert model.status_code == 201, model.text
    return {
        "job_id": job_a,
        "dataset_id": dataset_a,
        "artifact_id": artifact_id,
        "deployment_id": deployment.json()["id"],
        "model_id": model.json()["id"],
        "key_id": tenant_a.key_id,
    }


def _body_for(method: str, path: str) -> dict[str, Any] | None:
    """A body that is valid apart from the ids, so a 404 cannot hide behind a 422."""
    if method != "post":
        return None
    if path.endswith("/predict"):
        return {"inputs": ["a fine film"]}
    return {}


def test_every_id_route_is_404_for_another_tenant(
    client: TestClient, tenant_a: TenantKey, tenant_b: TenantKey, a_ids: dict[str, str]
) -> None:
    spec = client.app.openapi()  # type: ignore[attr-defined]
    spec_paths = set(spec["paths"])
    hidden = [
        r.path
        for r in client.app.routes  # type: ignore[attr-defined]
        if isinstance(r, APIRoute) and "{" in r.path and r.path not in spec_paths
    ]
    assert not hidden, f"id routes missing from the OpenAPI spec escape this matrix: {hidden}"

    answers: dict[int, int] = {}
    for path, methods in spec["paths"].items():
        params = re.findall(r"{(\w+)}", path)
        if not params:
            continue
        unknown = [p for p in params if p not in a_ids]
        assert not unknown, f"{path}: add an id of kind {unknown} to the isolation matrix"
        url = path.format(**{p: a_ids[p] for p in params})
        for method in methods:
            r = client.request(
                method.upper(), url, headers=tenant_b.headers, json=_body_for(method, path)
            )
            answers[r.status_code] = answers.get(r.status_code, 0) + 1
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert not set(ID_RE.findall(r.text)) - {a_ids[p] for p in params}, (path, r.text)
    figure(
        "tenant_matrix_id_routes",
        requests=sum(answers.values()),
        answered_404=answers.get(404, 0),
        other=sum(v for k, v in answers.items() if k != 404),
    )
    assert sum(answers.values()) >= 14

    # A's objects are untouched (B's DELETE and cancel did nothing).
    assert client.get(f"/v1/jobs/{a_ids['job_id']}", headers=tenant_a.headers).json()["status"] == (
        "queued"
    )
    r = client.get(f"/v1/deployments/{a_ids['deployment_id']}", headers=tenant_a.headers)
    assert r.status_code == 200
    assert client.get("/v1/me", headers=tenant_a.headers).status_code == 200  # key not revoked


def test_lists_and_pages_never_show_another_tenants_objects(
    client: TestClient, tenant_b: TenantKey, a_ids: dict[str, str]
) -> None:
    listed, leaked = 0, []
    for path, methods in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if "{" in path or "get" not in methods or path in PUBLIC:
            continue
        for query in ("", "?limit=200", "?status=queued"):
            r = client.get(path + query, headers=tenant_b.headers)
            assert r.status_code in (200, 422), (path, r.text)
            leaked += [(path, i) for i in set(ID_RE.findall(r.text)) & set(a_ids.values())]
            listed += 1
    figure("tenant_matrix_lists", list_requests=listed, leaked_ids=len(leaked))
    assert not leaked


def test_another_tenants_ids_in_bodies_are_404(
    client: TestClient, tenant_b: TenantKey, a_ids: dict[str, str]
) -> None:
    b_dataset = client.post(
        "/v1/datasets",
        headers=tenant_b.headers,
        files={"file": ("d.csv", b"text,label\na,x\nb,y\nc,x\nd,y\n", "text/csv")},
    ).json()["id"]
    attempts = {
        "job on A's dataset": ("/v1/jobs", {"dataset": a_ids["dataset_id"]}),
        "job on A's model": ("/v1/jobs", {"dataset": b_dataset, "base_model": a_ids["model_id"]}),
        "job validated on A's dataset": (
            "/v1/jobs",
            {"dataset": b_dataset, "validation_dataset": a_ids["dataset_id"]},
        ),
        "job with A's unlabelled pool": (
            "/v1/jobs",
            {"dataset": b_dataset, "unlabelled_dataset": a_ids["dataset_id"]},
        ),
        "deploy A's artifact": ("/v1/deployments", {"artifact_id": a_ids["artifact_id"]}),
    }
    for what, (url, body) in attempts.items():
        r = client.post(url, headers=tenant_b.headers, json=body)
        assert r.status_code == 404, (what, r.text)
    figure("tenant_matrix_ids_in_bodies", attempts=len(attempts), answered_404=len(attempts))
