"""A worker killed mid-job: its job is not left `running`; the reaper hands it to a new worker."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db.models import utcnow
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from app.queue import CeleryJobQueue
from app.settings import Settings
from tests.conftest import migrate
from tests.integration.flow import celery_worker, submit_job, wait_for_job
from workers.reaper import reap

pytestmark = pytest.mark.integration


def test_killed_worker_job_is_retried(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    settings = Settings(
        environment="test",
        var_dir=tmp_path / "var",
        database_url=postgres_url,
        broker_url=redis_url,
        job_lease_seconds=5,
        job_heartbeat_seconds=1,
    )
    migrate(postgres_url)
    with TestClient(create_app(settings)) as client:
        with celery_worker(settings, tmp_path / "worker1.log") as first:
            headers, job_id = submit_job(client, settings, tmp_path)
            deadline = time.monotonic() + 60
            while client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] != "running":
                assert time.monotonic() < deadline, "the first worker never claimed the job"
                time.sleep(0.1)
            os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, no goodbyes
            first.wait(timeout=10)

        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        assert job["status"] == "running"  # nobody is left to finish it...
        time.sleep(settings.job_lease_seconds + 1)  # ...and its lease runs out

        engine = make_engine(postgres_url)
        queue = CeleryJobQueue(redis_url)
        try:
            report = reap(make_sessionmaker(engine), queue, utcnow())
        finally:
            queue.close()
            engine.dispose()
        assert report.requeued == [job_id]

        with celery_worker(settings, tmp_path / "worker2.log"):
            job = wait_for_job(client, headers, job_id, tmp_path / "worker2.log")
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 2
        events = client.get(f"/v1/jobs/{job_id}/events", headers=headers).json()["data"]
        started = [e["attempt"] for e in events if e["kind"] == "job.started"]
        assert started == [1, 2]
        assert "job.requeued" in [e["kind"] for e in events]
