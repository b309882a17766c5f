"""Point 7: `Idempotency-Key` on every POST of the OpenAPI spec (IETF draft semantics).

For each route: the same key and body replay the first response with no second effect; the
same key with another body is 422; a key whose first request is still in flight is 409; and
keys are scoped per tenant (B's identical key is B's own). A POST added to the API without a
scenario here fails the test.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey, Dataset, Deployment, IdempotencyKey, Job, JobEvent, Model
from app.db.session import unit_of_work
from app.settings import Settings
from tests.app.artifacts_util import add_artifact
from tests.app.conftest import GOOD_CSV, TenantKey, submit_job, upload_dataset
from tests.app.model_archives import model_files
from tests.reliability.harness import figure

pytestmark = pytest.mark.unit

# POSTs that change nothing, so there is nothing to de-duplicate (see app/idempotency.py).
EXEMPT = {"/v1/deployments/{deployment_id}/predict": "pure computation, no state change"}


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


MODEL_ZIP = _zip(model_files())


@dataclass
class World:
    client: TestClient
    db: sessionmaker[Session]
    settings: Settings
    tmp_path: Path

    def count(self, model: type[Any], tenant: TenantKey, **where: Any) -> int:
        with self.db() as s:
            q = select(func.count()).select_from(model)
            if model is JobEvent:
                q = q.join(Job, Job.id == JobEvent.job_id).where(Job.tenant_id == tenant.id)
            else:
                q = q.where(model.tenant_id == tenant.id)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return int(s.scalar(q) or 0)


# A scenario: (prepare(world, tenant) -> context, request(context, variant) -> (url, kwargs),
# effect(world, tenant) -> a count that grows by one per real execution).
Request = tuple[str, dict[str, Any]]


def _dataset(w: World, t: TenantKey) -> str:
    return str(upload_dataset(w.client, t).json()["id"])


def _queued_job(w: World, t: TenantKey) -> str:
    return str(submit_job(w.client, t, _dataset(w, t)).json()["id"])


def _artifact(w: World, t: TenantKey) -> str:
    job = _queued_job(w, t)
    folder = w.tmp_path / uuid.uuid4().hex
    folder.mkdir()
    return add_artifact(w.db, w.settings, t.id, job, folder)[0]


SCENARIOS: dict[str, tuple[Callable[..., Any], Callable[..., Request], Callable[..., int]]] = {
    "/v1/keys": (
        lambda w, t: None,
        lambda ctx, v: ("/v1/keys", {"json": {"name": f"k{v}"}}),
        lambda w, t: w.count(ApiKey, t),
    ),
    "/v1/datasets": (
        lambda w, t: None,
        lambda ctx, v: (
            "/v1/datasets",
            {"files": {"file": ("d.csv", GOOD_CSV + f"more,neg{v}\n".encode(), "text/csv")}},
        ),
        lambda w, t: w.count(Dataset, t),
    ),
    "/v1/models": (
        lambda w, t: None,
        lambda ctx, v: (
            "/v1/models",
            {"files": {"file": ("m.zip", MODEL_ZIP, "application/zip")}, "data": {"name": v}},
        ),
        lambda w, t: w.count(Model, t),
    ),
    "/v1/jobs": (
        _dataset,
        lambda ds, v: ("/v1/jobs", {"json": {"dataset": ds, "seed": v}}),
        lambda w, t: w.count(Job, t),
    ),
    "/v1/jobs/{job_id}/cancel": (
        _queued_job,
        # The body is ignored (the request is its path): "another body" is another job's path.
        lambda job, v: (f"/v1/jobs/{job}/cancel", {}),
        lambda w, t: w.count(JobEvent, t, message="job cancelled"),
    ),
    "/v1/deployments": (
        _artifact,
        lambda art, v: ("/v1/deployments", {"json": {"artifact_id": art, "max_batch_size": v}}),
        lambda w, t: w.count(Deployment, t),
    ),
}


def _post(w: World, t: TenantKey, req: Request, key: str) -> Any:
    url, kwargs = req
    return w.client.post(url, headers={**t.headers, "Idempotency-Key": key}, **kwargs)


def _strip_secret(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "key"}


def test_idempotency_key_on_every_post(
    client: TestClient,
    tenant_a: TenantKey,
    tenant_b: TenantKey,
    db: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
) -> None:
    posts = {
        p
        for p, methods in client.app.openapi()["paths"].items()
        if "post" in methods  # type: ignore[attr-defined]
    }
    missing = posts - set(SCENARIOS) - set(EXEMPT)
    assert not missing, f"POST routes without an Idempotency-Key scenario: {missing}"
    w = World(client, db, settings, tmp_path)
    checks = 0
    for path, (prepare, build, effect) in SCENARIOS.items():
        key, busy = f"key-1{path}", f"busy{path}"  # a key names one request, so one per route
        ctx_a = prepare(w, tenant_a)
        req = build(ctx_a, 1)
        before = effect(w, tenant_a)
        first = _post(w, tenant_a, req, key)
        assert first.status_code in (200, 201), (path, first.text)
        # 1. Same key, same body: the first response again, and no second effect.
        again = _post(w, tenant_a, req, key)
        assert again.status_code == first.status_code, (path, again.text)
        assert again.headers.get("idempotent-replayed") == "true", path
        if path == "/v1/keys":  # the secret is never stored, so a replay cannot show it
            assert again.json()["key"] is None
            assert _strip_secret(again.json()) == _strip_secret(first.json())
        else:
            assert again.json() == first.json(), path
        assert effect(w, tenant_a) == before + 1, path
        # 2. Same key, another body: 422 and no effect.
        other = build(prepare(w, tenant_a) if path.endswith("/cancel") else ctx_a, 2)
        r = _post(w, tenant_a, other, key)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "idempotency_key_reused", path
        # 3. Same key while the first request is still in flight: 409.
        with unit_of_work(db) as s:
            row = s.scalars(
                select(IdempotencyKey).where(
                    IdempotencyKey.tenant_id == tenant_a.id, IdempotencyKey.key == key
                )
            ).one()
            s.add(
                IdempotencyKey(
                    tenant_id=tenant_a.id,
                    key=busy,
                    method="POST",
                    path=row.path,
                    request_hash=row.request_hash,
                    in_flight=True,
                )
            )
        r = _post(w, tenant_a, req, busy)
        assert r.status_code == 409, (path, r.text)
        assert effect(w, tenant_a) == before + 1, path
        # 4. Per tenant: B's request with the same key is B's own, executed once.
        b_before = effect(w, tenant_b)
        b = _post(w, tenant_b, build(prepare(w, tenant_b), 1), key)
        assert b.status_code in (200, 201), (path, b.text)
        assert b.headers.get("idempotent-replayed") is None, path
        assert effect(w, tenant_b) == b_before + 1, path
        checks += 4
    figure(
        "idempotency_every_post",
        post_routes=len(posts),
        covered=len(SCENARIOS),
        exempt=len(EXEMPT),
        checks=checks,
    )
