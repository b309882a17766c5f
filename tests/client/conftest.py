"""The client against the real app in-process (FastAPI's TestClient is an httpx.Client), on a
migrated SQLite file with a recording job queue: the API fixtures of tests/app, reused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job, JobEvent, utcnow
from app.db.models import TraceRow as TraceRowModel
from app.db.session import unit_of_work
from sec_client import SecClient
from tests.app import conftest as app_fixtures
from tests.app.conftest import TenantKey
from tests.client.inline_worker import inline_worker as inline_worker_fixture

# The API fixtures of tests/app, made visible here.
client = app_fixtures.client
dataset_a = app_fixtures.dataset_a
db = app_fixtures.db
job_a = app_fixtures.job_a
job_queue = app_fixtures.job_queue
settings = app_fixtures.settings
tenant_a = app_fixtures.tenant_a
tenant_b = app_fixtures.tenant_b
inline_worker = inline_worker_fixture  # a worker that runs each enqueued job at once


@pytest.fixture
def sec(client: TestClient, tenant_a: TenantKey) -> Iterator[SecClient]:
    with SecClient("http://testserver", tenant_a.key, http=client) as c:
        yield c


def write_progress(db: sessionmaker[Session], job_id: str, steps: int) -> None:
    """What a worker writes while a job runs: status, phase, progress, trace rows, events."""
    with unit_of_work(db) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.status, job.phase, job.progress = "running", "compressing", 0.5
        for step in range(steps):
            s.add(
                TraceRowModel(
                    job_id=job_id,
                    step=step,
                    phase="compressing",
                    lambda1=0.5 - step / 20,
                    lambda2=0.5 + step / 10,
                    val_accuracy=0.8,
                    sparsity=step / 10,
                    size_mb=20.0 - step,
                    observation={},
                    decision={},
                    created_at=utcnow(),
                )
            )
            s.add(JobEvent(job_id=job_id, kind="aip.step", message=f"step {step}", data={}))


def finish_job(db: sessionmaker[Session], job_id: str) -> None:
    """What the worker writes when the job succeeds."""
    with unit_of_work(db) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.status, job.progress, job.phase = "succeeded", 1.0, None
        job.metrics = {"teacher": {"accuracy": 0.9}, "compressed": {"accuracy": 0.88}}
        s.add(JobEvent(job_id=job_id, kind="job.succeeded", message="done", data={}))
