"""Point 2: the same job delivered twice has exactly one execution effect: one artifact, one set
of trace rows, one `job.started`. Two variants, both with real workers on real Redis:

- a duplicate message sent while both workers are idle, so two workers get it at once;
- a short Redis visibility timeout, so Redis itself redelivers a job that is still running.

Each variant also checks that the fault really happened (the workers received more messages
than there were jobs), so the test cannot pass by never delivering twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.db.models import JobStatus
from app.queue import CeleryJobQueue
from tests.reliability.harness import Stack, chaos_settings, figure, stack, trials

pytestmark = pytest.mark.integration


def _single_effect(s: Stack, job_id: str, steps: int) -> bool:
    job = s.wait_terminal(job_id)
    return (
        job is not None
        and job.status == JobStatus.SUCCEEDED
        and job.attempts == 1
        and s.started_events(job_id) == 1
        and len(s.artifacts(job_id)) == 1
        and s.trace_steps(job_id) == list(range(steps))
    )


def test_concurrent_duplicate_delivery(tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    settings = chaos_settings(tmp_path, postgres_url, redis_url)
    n = trials("SEC_DUPLICATE_TRIALS", 3)
    queue = CeleryJobQueue(redis_url)
    with stack(tmp_path, settings) as s, s.worker("w1"), s.worker("w2"):
        single = 0
        for _ in range(n):
            job_id = s.submit()  # the API sends the message once...
            queue.enqueue(job_id, "gpu")  # ...and a duplicate goes out at the same moment
            single += _single_effect(s, job_id, steps=10)
        deliveries = s.deliveries()
    queue.close()
    figure(
        "duplicate_delivery_concurrent",
        jobs=n,
        deliveries=deliveries,
        single_effect=single,
        double_effect=n - single,
    )
    assert deliveries >= 2 * n, s.log_tail()
    assert single == n, s.log_tail()


def test_redelivery_after_visibility_timeout(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    # Redis restores unacked messages older than 2 s (kombu checks every 10 s): a 16 s job is
    # redelivered to the idle second worker while the first still runs it.
    settings = chaos_settings(
        tmp_path, postgres_url, redis_url, broker_visibility_timeout_seconds=2
    )
    n = trials("SEC_REDELIVERY_TRIALS", 1)
    slow = {"SEC_FAKE_STEPS": "32", "SEC_FAKE_STEP_SECONDS": "0.5"}
    with stack(tmp_path, settings) as s, s.worker("w1", **slow), s.worker("w2", **slow):
        single = sum(_single_effect(s, s.submit(), steps=32) for _ in range(n))
        deliveries = s.deliveries()
    figure(
        "duplicate_delivery_visibility_timeout",
        jobs=n,
        deliveries=deliveries,
        single_effect=single,
        double_effect=n - single,
        visibility_timeout_s=2,
    )
    assert deliveries > n, f"Redis never redelivered\n{s.log_tail()}"
    assert single == n, s.log_tail()
