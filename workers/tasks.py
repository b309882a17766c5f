"""The Celery tasks: thin wrappers that take ids and call the logic in `job_runner` / `reaper`.

The worker context (DB engine, artifact store) is built on first use inside the pool child,
after the fork, so no connection is ever shared between processes.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Task
from celery.exceptions import TimeLimitExceeded

from app.queue import TaskName
from app.settings import get_settings
from workers.celery_app import app
from workers.context import WorkerContext, build_context
from workers.job_runner import fail_killed_at_hard_limit, run_job
from workers.reaper import reap
from workers.scratch import sweep_finished_job_dirs

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def worker_context() -> WorkerContext:
    return build_context(get_settings())


class _CeleryAppQueue:
    """`JobQueue` over the worker's own Celery app (the reaper re-enqueues through it)."""

    def enqueue(self, job_id: str, queue: str) -> None:
        app.send_task(TaskName.RUN_JOB.value, args=[job_id], queue=queue)


class _JobTask(Task):  # type: ignore[misc]  # Celery ships no type hints
    """`sec.jobs.run`, plus what the worker's main process does when the pool kills a job at
    the hard time limit (the job ignored the soft limit, e.g. stuck in native code)."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, TimeLimitExceeded) and args:
            minutes = get_settings().job_hard_limit_minutes
            fail_killed_at_hard_limit(get_settings().database_url, str(args[0]), minutes)


@app.task(name=TaskName.RUN_JOB.value, ignore_result=True, base=_JobTask)  # type: ignore[untyped-decorator]
def run_job_task(job_id: str) -> str:
    """Run one job to a terminal state; a duplicate or redelivered message does nothing."""
    outcome = run_job(worker_context(), job_id)
    logger.info("job %s: %s", job_id, outcome)
    return outcome.value


# Celery ships no type hints, hence the ignores on its decorators.
@app.task(name=TaskName.REAP.value, ignore_result=True, soft_time_limit=120, time_limit=180)  # type: ignore[untyped-decorator]
def reap_task() -> int:
    """Requeue or fail jobs whose worker died; re-enqueue jobs whose message was lost."""
    ctx = worker_context()
    report = reap(ctx.sessions, _CeleryAppQueue(), ctx.clock())
    return report.total()


@app.task(
    name=TaskName.SWEEP_PARTIAL_WRITES.value,
    ignore_result=True,
    soft_time_limit=600,
    time_limit=660,
)  # type: ignore[untyped-decorator]
def sweep_partial_writes_task() -> int:
    """Delete what killed writers left: temporary files in the artifact store, and the
    scratch folders (with their checkpoints) of jobs that have ended."""
    ctx = worker_context()
    max_age = ctx.settings.partial_write_max_age_seconds
    removed = ctx.store.sweep_partial_writes(max_age)
    if removed:
        logger.info("removed %d stale partial artifact write(s)", removed)
    # The same hourly pass clears this worker's scratch folders of jobs that ended without
    # their last attempt doing it (reaped after max_attempts, killed at the hard limit).
    return removed + len(sweep_finished_job_dirs(ctx.sessions, ctx.settings.work_dir, max_age))
