"""Point 3: Redis goes down while jobs are submitted and running, and comes back empty (no
persistence: every message it held is lost). The database is the source of truth: every job
submitted before, during and after the outage completes, and the workers consume again.

This uses a private redis-server on its own port (never the shared one). Jobs:
`SEC_OUTAGE_JOBS` (4 in `make test`, 20 in `make chaos`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.db.models import JobStatus
from tests.reliability.harness import (
    PrivateRedis,
    chaos_settings,
    figure,
    reaper_thread,
    stack,
    trials,
)

pytestmark = pytest.mark.integration

# At least this long; submitting during the outage can make it longer (each submit waits for
# its two quick enqueue retries).
OUTAGE_SECONDS = 4.0


def test_jobs_survive_a_broker_restart(tmp_path: Path, postgres_url: str) -> None:
    n = trials("SEC_OUTAGE_JOBS", 4)
    before, during = n // 2, n - n // 2
    with PrivateRedis(tmp_path) as redis:
        settings = chaos_settings(tmp_path, postgres_url, redis.url)
        # stale_after 5 s stands in for the production 5 min: how long a `queued` job may
        # wait for its message before the reaper concludes the broker lost it.
        with (
            stack(tmp_path, settings) as s,
            reaper_thread(settings, stale_after=5.0) as reaper_errors,
            s.worker("worker"),
        ):
            jobs = [s.submit() for _ in range(before)]
            s.wait_mid_engine(jobs[0])  # a job is running when the broker dies
            redis.stop()
            down_at = time.monotonic()
            slowest_submit = 0.0
            for _ in range(during):
                t0 = time.monotonic()
                jobs.append(s.submit())  # accepted (201) and committed, though not enqueued
                slowest_submit = max(slowest_submit, time.monotonic() - t0)
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
            outage = time.monotonic() - down_at
            redis.start()  # same port, empty
            finished = [s.wait_terminal(j, timeout=60 + 10 * n) for j in jobs]
            statuses = [j.status if j else "stuck" for j in finished]
            figure(
                "broker_outage",
                submitted=n,
                submitted_during_outage=during,
                completed=statuses.count(JobStatus.SUCCEEDED.value),
                lost=n - len([x for x in statuses if x != "stuck"]),
                stuck=statuses.count("stuck"),
                failed=statuses.count(JobStatus.FAILED.value),
                outage_s=f"{outage:.1f}",
                slowest_submit_during_outage_s=f"{slowest_submit:.2f}",
                reaper_sweeps_that_raised=reaper_errors[0],
                retried_jobs=sum(1 for j in finished if j and j.attempts > 1),
            )
            assert statuses == [JobStatus.SUCCEEDED.value] * n, f"{statuses}\n{s.log_tail()}"
            assert all(len(s.artifacts(j)) == 1 for j in jobs)
            assert s.stale_running() == 0
