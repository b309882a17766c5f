"""API test fixtures: an app per test on its own migrated SQLite file and var folder, two
tenants with keys, and a recording job queue instead of a broker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.migrate import upgrade
from app.db.models import Job, JobStatus
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.main import create_app
from app.settings import Settings
from app.tenants.service import create_api_key, create_tenant
from tests.doubles import RecordingJobQueue

GOOD_CSV = b"text,label\ngreat film,pos\nawful plot,neg\nlovely acting,pos\ndull story,neg\n"


@dataclass(frozen=True)
class TenantKey:
    id: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        var_dir=tmp_path / "var",
        max_upload_bytes=64 * 1024,
        max_dataset_rows=50,
        max_model_archive_bytes=2 * 1024 * 1024,
        max_archive_entries=40,
        max_archive_ratio=50.0,
        max_concurrent_jobs_per_tenant=3,
        sse_poll_seconds=0.02,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[sessionmaker[Session]]:
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def job_queue() -> RecordingJobQueue:
    return RecordingJobQueue()


@pytest.fixture
def client(
    settings: Settings, db: sessionmaker[Session], job_queue: RecordingJobQueue
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, job_queue=job_queue)) as c:
        yield c


def make_tenant(db: sessionmaker[Session], name: str) -> TenantKey:
    with unit_of_work(db) as s:
        tenant = create_tenant(s, name)
        key, plaintext = create_api_key(s, tenant.id)
        return TenantKey(id=tenant.id, key=plaintext, key_id=key.id)


@pytest.fixture
def tenant_a(db: sessionmaker[Session]) -> TenantKey:
    return make_tenant(db, "tenant-a")


@pytest.fixture
def tenant_b(db: sessionmaker[Session]) -> TenantKey:
    return make_tenant(db, "tenant-b")


def upload_dataset(
    client: TestClient,
    tenant: TenantKey,
    content: bytes = GOOD_CSV,
    filename: str = "data.csv",
    **form: str,
) -> Any:
    return client.post(
        "/v1/datasets",
        headers=tenant.headers,
        files={"file": (filename, content, "application/octet-stream")},
        data=form,
    )


@pytest.fixture
def dataset_a(client: TestClient, tenant_a: TenantKey) -> str:
    r = upload_dataset(client, tenant_a)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def submit_job(client: TestClient, tenant: TenantKey, dataset: str, **extra: Any) -> Any:
    headers = dict(tenant.headers)
    if "idempotency_key" in extra:
        headers["Idempotency-Key"] = extra.pop("idempotency_key")
    return client.post("/v1/jobs", headers=headers, json={"dataset": dataset, **extra})


@pytest.fixture
def job_a(client: TestClient, tenant_a: TenantKey, dataset_a: str) -> str:
    r = submit_job(client, tenant_a, dataset_a)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def set_status(db: sessionmaker[Session], job_id: str, status: JobStatus) -> None:
    with unit_of_work(db) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.status = status.value


def count_rows(db: sessionmaker[Session], model: type[Any]) -> int:
    with db() as s:
        return s.query(model).count()


def uploaded_files(settings: Settings) -> list[Path]:
    """Every file uploads left: blobs in the (local) store, and anything left over in the
    API's upload scratch space, where nothing should stay."""
    roots = (settings.var_dir / "store", settings.uploads_dir)
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())
