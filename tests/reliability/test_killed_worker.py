"""Point 1: a worker SIGKILLed mid-job (its pool child, or the whole worker) never loses the job
and never leaves it `running`: the lease runs out, the reaper re-queues it with its attempt
count raised, and a worker finishes it. A job that kills its worker every time fails with
`worker_lost` after `max_attempts`.

The engine has no resumable checkpoint: a re-queued job restarts from the beginning (see
docs/RELIABILITY.md). Trials: `SEC_CHAOS_TRIALS` (3 in `make test`, 20 in `make chaos`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from app.db.models import JobStatus
from tests.reliability.harness import (
    Stack,
    chaos_settings,
    figure,
    kill_child,
    reaper_thread,
    stack,
    trials,
)

pytestmark = pytest.mark.integration


def _outcome(s: Stack, job_id: str, killed_at: float) -> tuple[str, float]:
    job = s.wait_terminal(job_id)
    if job is None:
        return "stuck", 0.0
    ok = job.status == JobStatus.SUCCEEDED and job.attempts >= 2 and len(s.artifacts(job_id)) == 1
    return ("recovered" if ok else f"lost:{job.status}"), time.monotonic() - killed_at


def _report(name: str, results: list[tuple[str, float]], s: Stack) -> None:
    outcomes = [r for r, _ in results]
    figure(
        name,
        trials=len(results),
        recovered=outcomes.count("recovered"),
        lost=sum(o.startswith("lost") for o in outcomes),
        stuck=outcomes.count("stuck"),
        stale_running_after=s.stale_running(),
        max_recovery_s=f"{max((t for _, t in results), default=0):.1f}",
        lease_s=s.settings.job_lease_seconds,
    )
    assert outcomes == ["recovered"] * len(results), f"{outcomes}\n{s.log_tail()}"
    assert s.stale_running() == 0


def test_killed_pool_child(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    settings = chaos_settings(tmp_path, postgres_url, redis_url)
    results = []
    with stack(tmp_path, settings) as s, reaper_thread(settings), s.worker("worker"):
        for _ in range(trials("SEC_CHAOS_TRIALS", 3)):
            job_id = s.submit()
            kill_child(s.wait_mid_engine(job_id))
            results.append(_outcome(s, job_id, time.monotonic()))
        _report("killed_worker_child", results, s)


def test_killed_worker_main_process(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    settings = chaos_settings(tmp_path, postgres_url, redis_url)
    results = []
    with stack(tmp_path, settings) as s, reaper_thread(settings):
        for i in range(trials("SEC_CHAOS_TRIALS", 3)):
            with s.worker(f"victim-{i}") as victim:
                job_id = s.submit()
                s.wait_mid_engine(job_id)
                os.killpg(victim.pid, signal.SIGKILL)  # the main process and its child
                victim.wait(timeout=10)
            killed_at = time.monotonic()
            assert s.job(job_id).status == JobStatus.RUNNING  # nobody left to finish it
            with s.worker(f"rescuer-{i}"):
                results.append(_outcome(s, job_id, killed_at))
        _report("killed_worker_main", results, s)


def test_poison_job_fails_after_max_attempts(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    settings = chaos_settings(tmp_path, postgres_url, redis_url)
    with stack(tmp_path, settings) as s, reaper_thread(settings):
        with s.worker("poisoned", SEC_FAKE_POISON="1"):
            job_id = s.submit()
            job = s.wait_terminal(job_id, timeout=120)
        assert job is not None, s.log_tail()
        figure(
            "poison_job",
            max_attempts=job.max_attempts,
            attempts=job.attempts,
            status=job.status,
            error_code=job.error_code,
            started_events=s.started_events(job_id),
        )
        assert job.status == JobStatus.FAILED
        assert job.error_code == "worker_lost"
        assert job.attempts == job.max_attempts == s.started_events(job_id)
        assert s.stale_running() == 0
