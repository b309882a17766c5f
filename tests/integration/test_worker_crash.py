"""A worker killed mid-job: its job is not left `running`; the reaper hands it to a new worker,
which resumes from the teacher checkpoint when the kill came after the teacher phase."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db.models import utcnow
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from app.queue import CeleryJobQueue
from app.settings import Settings
from tests.conftest import migrate
from tests.integration import flow
from tests.integration.flow import celery_worker, submit_job, wait_for_job
from tests.reliability.harness import figure
from workers.reaper import reap

pytestmark = pytest.mark.integration

# When to kill the first worker, asked every 0.1 s with the client, auth headers and job id.
KillWhen = Callable[[TestClient, dict[str, str], str], bool]


def _running(client: TestClient, headers: dict[str, str], job_id: str) -> bool:
    return bool(client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "running")


def _events(client: TestClient, headers: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get(
        f"/v1/jobs/{job_id}/events?limit=1000", headers=headers
    ).json()["data"]
    return data


def _teacher_saved(client: TestClient, headers: dict[str, str], job_id: str) -> bool:
    return any(e["kind"] == "checkpoint.saved" for e in _events(client, headers, job_id))


def _kill_and_retry(
    tmp_path: Path, postgres_url: str, redis_url: str, kill_when: KillWhen
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit a job, SIGKILL its worker once `kill_when` holds, let the lease run out, reap,
    finish the job on a second worker; returns the job and its events."""
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
            deadline = time.monotonic() + 90
            while not kill_when(client, headers, job_id):
                assert time.monotonic() < deadline, "the moment to kill the worker never came"
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
        events = _events(client, headers, job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert [e["attempt"] for e in events if e["kind"] == "job.started"] == [1, 2]
    assert "job.requeued" in [e["kind"] for e in events]
    assert not (settings.work_dir / job_id).exists()  # checkpoint and leftovers cleared
    return job, events


def test_killed_worker_job_is_retried(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    _kill_and_retry(tmp_path, postgres_url, redis_url, _running)


def test_killed_after_the_teacher_resumes_from_the_checkpoint(
    tmp_path: Path, postgres_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the fast spec the job ends about a second after its checkpoint (measured on 2
    # cores); 40 student epochs widen that to about 7 s, so the kill (polled every 0.1 s)
    # lands between the checkpoint and the end of the job.
    training = {**flow.FAST_SPEC["training"], "student_epochs": 40}
    monkeypatch.setitem(flow.FAST_SPEC, "training", training)
    _, events = _kill_and_retry(tmp_path, postgres_url, redis_url, _teacher_saved)
    kinds = {(e["attempt"], e["kind"]) for e in events}
    at = {(e["attempt"], e["kind"]): datetime.fromisoformat(e["created_at"]) for e in events}

    def seconds(attempt: int, start: str, end: str) -> float:
        return round((at[attempt, end] - at[attempt, start]).total_seconds(), 2)

    saved = next(e["data"] for e in events if e["kind"] == "checkpoint.saved")
    figure(
        "teacher_checkpoint_resume",
        attempt1_teacher_phase_s=seconds(1, "stages.ready", "checkpoint.saved"),
        checkpoint_write_s=saved["seconds"],
        checkpoint_bytes=saved["size_bytes"],
        attempt2_restore_s=seconds(2, "stages.ready", "checkpoint.resumed"),
        attempt2_total_s=seconds(2, "job.started", "job.succeeded"),
    )
    assert (1, "checkpoint.saved") in kinds
    assert (2, "checkpoint.resumed") in kinds
    assert (2, "tal.round") not in kinds  # the second attempt did not train the teacher
    assert (2, "job.succeeded") in kinds
