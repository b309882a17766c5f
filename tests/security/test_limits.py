"""Point 8: resource limits. Uploads past their size or row caps get 413; a tenant past its
concurrent-job cap or its request rate gets 429 (the rate limit with `Retry-After`); inference
inputs are bounded; unknown or server-owned fields in any JSON body get 422 and change nothing.
(The worker-enforced job time limit is in tests/reliability/test_time_limit.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey, Dataset, Deployment, Job, Model
from app.deployments.schemas import PredictRequest
from app.deployments.service import check_inputs
from app.errors import InvalidInput, PayloadTooLarge
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import TenantKey, count_rows, submit_job, upload_dataset
from tests.app.model_archives import model_files, zip_bytes
from tests.doubles import RecordingJobQueue
from tests.reliability.harness import figure

pytestmark = pytest.mark.unit


def test_upload_and_body_caps_are_413(
    client: TestClient,
    tenant_a: TenantKey,
    dataset_a: str,
    settings: Settings,
    db: sessionmaker[Session],
) -> None:
    too_many_rows = b"text,label\n" + b"".join(
        f"row {i},{'pos' if i % 2 else 'neg'}\n".encode()
        for i in range(settings.max_dataset_rows + 1)
    )
    too_big = b"text,label\n" + b"x" * settings.max_upload_bytes + b",pos\n"
    big_model = zip_bytes(model_files()) + b"\0" * (settings.max_model_archive_bytes + 1)
    cases = {
        "dataset_bytes": upload_dataset(client, tenant_a, too_big),
        "dataset_rows": upload_dataset(client, tenant_a, too_many_rows),
        "model_archive_bytes": client.post(
            "/v1/models",
            headers=tenant_a.headers,
            files={"file": ("m.zip", big_model, "application/zip")},
        ),
        "json_body_bytes": client.post(
            "/v1/jobs",
            headers={**tenant_a.headers, "Content-Type": "application/json"},
            content=json.dumps(
                {"dataset": dataset_a, "pad": "x" * settings.max_json_body_bytes}
            ).encode(),
        ),
    }
    statuses = {name: r.status_code for name, r in cases.items()}
    figure("upload_caps", **statuses)
    for name, r in cases.items():
        assert r.status_code == 413, (name, r.text)
        assert r.json()["error"]["message"], name  # names the limit
    assert count_rows(db, Dataset) == 1  # only the fixture's
    assert count_rows(db, Model) == 0
    assert count_rows(db, Job) == 0


def test_concurrent_job_cap_is_429(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, settings: Settings
) -> None:
    cap = settings.max_concurrent_jobs_per_tenant
    statuses = [submit_job(client, tenant_a, dataset_a).status_code for _ in range(cap + 2)]
    figure(
        "concurrent_job_cap", cap=cap, accepted=statuses.count(201), refused_429=statuses.count(429)
    )
    assert statuses == [201] * cap + [429, 429]


@pytest.fixture
def limited(settings: Settings, db: sessionmaker[Session]) -> Iterator[TestClient]:
    strict = settings.model_copy(update={"rate_limit_per_minute": 5})
    with TestClient(create_app(strict, job_queue=RecordingJobQueue())) as c:
        yield c


def test_rate_limit_is_429_with_retry_after(
    limited: TestClient, tenant_a: TenantKey, tenant_b: TenantKey
) -> None:
    anonymous = [limited.get("/v1/me").status_code for _ in range(10)]
    assert set(anonymous) == {401}  # refused before counting: they use no tenant's budget
    answers = [limited.get("/v1/jobs", headers=tenant_a.headers) for _ in range(7)]
    statuses = [r.status_code for r in answers]
    assert statuses == [200] * 5 + [429, 429]
    retry_after = int(answers[5].headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert answers[5].json()["error"]["code"] == "rate_limited"
    other = limited.get("/v1/jobs", headers=tenant_b.headers)
    figure(
        "rate_limit",
        limit_per_minute=5,
        sent=len(statuses),
        ok=statuses.count(200),
        refused_429=statuses.count(429),
        retry_after_s=retry_after,
        other_tenant_status=other.status_code,
    )
    assert other.status_code == 200  # per tenant


@pytest.mark.integration
def test_rate_limit_is_shared_across_replicas_through_redis(
    settings: Settings, db: sessionmaker[Session], tenant_a: TenantKey, redis_url: str
) -> None:
    shared = settings.model_copy(
        update={"rate_limit_per_minute": 5, "rate_limit_storage_url": redis_url}
    )
    with (
        TestClient(create_app(shared, job_queue=RecordingJobQueue())) as one,
        TestClient(create_app(shared, job_queue=RecordingJobQueue())) as two,
    ):
        statuses = [
            (one if i % 2 else two).get("/v1/me", headers=tenant_a.headers).status_code
            for i in range(7)
        ]
    figure(
        "rate_limit_two_replicas_redis",
        sent=7,
        ok=statuses.count(200),
        refused_429=statuses.count(429),
    )
    assert statuses == [200] * 5 + [429, 429]


def test_inference_inputs_are_bounded(settings: Settings) -> None:
    n, chars = settings.inference_max_inputs, settings.inference_max_text_chars
    cases: dict[str, tuple[Any, type[Exception]]] = {
        "too_many_inputs": (["ok"] * (n + 1), PayloadTooLarge),
        "text_too_long": (["x" * (chars + 1)], InvalidInput),
        "empty_text": (["   "], InvalidInput),
        "pair_too_long": ([{"text": "a", "text_pair": "y" * (chars + 1)}], InvalidInput),
    }
    refused = 0
    for inputs, error in cases.values():
        with pytest.raises(error):
            check_inputs(PredictRequest(inputs=inputs), settings)
        refused += 1
    for bad in ([], "not a list", [1], [{"text": "a", "evil": 1}], [None]):
        with pytest.raises(ValueError, match="input"):
            PredictRequest.model_validate({"inputs": bad})
        refused += 1
    assert check_inputs(PredictRequest(inputs=["ok"] * n), settings)  # the bound itself is fine
    figure("inference_bounds", max_inputs=n, max_chars=chars, inputs_tried=refused, refused=refused)


# Fields a client must never set: ids, ownership, state, secrets, bookkeeping.
SERVER_OWNED = [
    "id", "tenant_id", "status", "created_at", "attempts", "max_attempts", "worker_id",
    "key_hash", "sha256", "storage_key", "storage_path", "error_code", "unknown_field",
]  # fmt: skip


def test_unknown_and_server_owned_fields_are_422(
    client: TestClient, tenant_a: TenantKey, dataset_a: str, db: sessionmaker[Session]
) -> None:
    bodies: dict[str, dict[str, Any]] = {
        "/v1/keys": {"name": "k"},
        "/v1/jobs": {"dataset": dataset_a},
        "/v1/deployments": {"artifact_id": "art_" + "0" * 32},
    }
    json_posts = {
        path
        for path, ops in client.app.openapi()["paths"].items()  # type: ignore[attr-defined]
        if "post" in ops
        and "application/json" in ops["post"].get("requestBody", {}).get("content", {})
        and "{" not in path
    }
    assert json_posts == set(bodies), f"add a body for {json_posts ^ set(bodies)}"
    before = {m: count_rows(db, m) for m in (ApiKey, Job, Deployment)}
    tried = 0
    for path, body in bodies.items():
        for field in SERVER_OWNED:
            r = client.post(path, headers=tenant_a.headers, json={**body, field: "x"})
            assert r.status_code == 422, (path, field, r.text)
            assert field in r.json()["error"]["message"], (path, field)
            tried += 1
    nested = {"dataset": dataset_a, "training": {"epochs_secret": 1}}
    assert client.post("/v1/jobs", headers=tenant_a.headers, json=nested).status_code == 422
    tried += 1
    predict = client.post(
        "/v1/deployments/dep_x/predict", headers=tenant_a.headers, json={"inputs": ["a"], "x": 1}
    )
    assert predict.status_code in (404, 422)  # no such deployment; never a 2xx
    after = {m: count_rows(db, m) for m in (ApiKey, Job, Deployment)}
    figure(
        "mass_assignment",
        bodies_tried=tried,
        refused_422=tried,
        rows_created=sum(after[m] - before[m] for m in after),
    )
    assert after == before


def test_open_event_streams_do_not_take_database_slots(
    client: TestClient, tenant_a: TenantKey, job_a: str
) -> None:
    """More open SSE streams than the pool has connections, and the API still answers: a stream
    must not keep its request's database slot (app.deps.db_admission) while it is open."""
    import threading

    db_slots = client.app.state.sec.settings.db_pool_size  # type: ignore[attr-defined]
    streams = db_slots + 3
    opened = threading.Semaphore(0)
    stop = threading.Event()

    def listen() -> None:
        with client.stream("GET", f"/v1/jobs/{job_a}/events/stream", headers=tenant_a.headers) as r:
            assert r.status_code == 200
            opened.release()
            for _ in r.iter_lines():
                if stop.is_set():
                    return

    threads = [threading.Thread(target=listen, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    for _ in range(streams):
        assert opened.acquire(timeout=30), "a stream never opened"
    r = client.get(f"/v1/jobs/{job_a}", headers=tenant_a.headers)
    figure(
        "open_streams_vs_db_slots",
        streams=streams,
        db_slots=db_slots,
        api_status=r.status_code,
    )
    assert r.status_code == 200
    stop.set()
    client.post(f"/v1/jobs/{job_a}/cancel", headers=tenant_a.headers)  # ends the streams
    for t in threads:
        t.join(timeout=30)
