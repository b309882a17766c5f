"""Point 8 (worker side): a job that runs past its time limit is stopped by the worker and fails
with `time_limit`, with a message naming the limit, and is not retried: at the soft limit (the
task stops itself), and at the hard limit (the pool kills a job that ignored the soft one)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.db.models import JobStatus
from tests.reliability.harness import chaos_settings, figure, reaper_thread, stack
from workers.celery_app import time_limits

pytestmark = pytest.mark.integration


def test_job_past_its_time_limit_fails(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    # A 3 s hard limit gives a 1.5 s soft limit (workers.celery_app.time_limits); the fake
    # engine would run for 20 s.
    settings = chaos_settings(tmp_path, postgres_url, redis_url, job_hard_limit_minutes=0.05)
    soft, hard = time_limits(settings)
    with (
        stack(tmp_path, settings) as s,
        s.worker("w", SEC_FAKE_STEPS="40", SEC_FAKE_STEP_SECONDS="0.5"),
    ):
        job_id = s.submit()
        job = s.wait_terminal(job_id, timeout=60)
    assert job is not None, s.log_tail()
    ran = (
        (job.finished_at - job.started_at).total_seconds()
        if job.finished_at and job.started_at
        else -1
    )
    figure(
        "job_time_limit",
        soft_limit_s=soft,
        hard_limit_s=hard,
        engine_would_run_s=20,
        status=job.status,
        error_code=job.error_code,
        ran_s=f"{ran:.1f}",
        attempts=job.attempts,
    )
    assert job.status == JobStatus.FAILED
    assert job.error_code == "time_limit"
    assert "time limit" in (job.error_message or "")
    assert job.attempts == 1
    assert len(s.artifacts(job_id)) == 0


def test_job_ignoring_the_soft_limit_is_killed_and_fails(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    settings = chaos_settings(tmp_path, postgres_url, redis_url, job_hard_limit_minutes=0.05)
    _, hard = time_limits(settings)
    stuck = {
        "SEC_FAKE_STEPS": "40",
        "SEC_FAKE_STEP_SECONDS": "0.5",
        "SEC_FAKE_IGNORE_SOFT_LIMIT": "1",
    }
    with stack(tmp_path, settings) as s, reaper_thread(settings), s.worker("w", **stuck):
        job_id = s.submit()
        job = s.wait_terminal(job_id, timeout=60)
        # Had the kill been left to the lease, the reaper would have re-queued it by now.
        time.sleep(settings.job_lease_seconds + 1)
        job = s.job(job_id)
    figure(
        "job_hard_time_limit",
        hard_limit_s=hard,
        status=job.status,
        error_code=job.error_code,
        attempts=job.attempts,
        started_events=s.started_events(job_id),
    )
    assert job.status == JobStatus.FAILED, s.log_tail()
    assert job.error_code == "time_limit"
    assert "hard time limit" in (job.error_message or "")
    assert job.attempts == 1
    assert s.started_events(job_id) == 1
