"""The stale-job reaper (`sec.jobs.reap`): the database, not the broker, decides what runs.

Run every minute by beat and once by the launcher at start-up. Two sweeps:

1. Jobs `running` / `cancel_requested` whose lease has expired: their worker died or hung.
   A cancel that was requested is honoured (`cancelled`); otherwise the job goes back to
   `queued` (attempts kept) and is re-enqueued while attempts remain, else it fails with
   `worker_lost`.
2. Jobs `queued` for longer than `stale_after` since they were last enqueued: the message was
   lost (a broker restart without persistence, the SQLite broker's fetched-but-never-acked
   messages, a purged queue). They are re-enqueued. Jobs the API never managed to send (broker
   down at submit time: `enqueued_at` is NULL) are sent at once. A duplicate message is harmless: the task's claim is
   conditional, so at most one delivery runs the job.

Every change is a conditional UPDATE on the state that was read, so two reapers running at
once (beat on two machines) cannot both act on one job, and the sweep is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job, JobStatus
from app.db.session import unit_of_work
from app.queue import JobQueue
from workers import job_state

logger = logging.getLogger(__name__)

DEFAULT_STALE_QUEUED = timedelta(minutes=5)
# Work in small batches so one sweep never holds a long transaction.
BATCH = 100


@dataclass
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    reenqueued: list[str] = field(default_factory=list)

    def total(self) -> int:
        return len(self.requeued) + len(self.failed) + len(self.cancelled) + len(self.reenqueued)


def _matched(result: Any) -> bool:
    return cast(CursorResult[Any], result).rowcount == 1


def _expire_one(session: Session, job: Job, now: datetime, report: ReapReport) -> str | None:
    """Handle one job whose lease ran out. Returns its queue if it must be re-enqueued."""
    # Match the exact state we read: a heartbeat that renews the lease in between wins.
    same = (
        (Job.id == job.id)
        & (Job.status == job.status)
        & (Job.lease_expires_at == job.lease_expires_at)
        & (Job.attempts == job.attempts)
    )
    common: dict[str, Any] = {"lease_expires_at": None, "updated_at": now}
    if job.status == JobStatus.CANCEL_REQUESTED:
        values = {**common, "status": JobStatus.CANCELLED.value, "finished_at": now}
        kind, message, bucket, queue = (
            "job.cancelled",
            "cancelled (its worker stopped)",
            report.cancelled,
            None,
        )
    elif job.attempts < job.max_attempts:
        values = {
            **common,
            "status": JobStatus.QUEUED.value,
            "worker_id": None,
            "phase": None,
            "progress": 0.0,
            "enqueued_at": now,
        }
        kind = "job.requeued"
        message = f"worker {job.worker_id} stopped renewing its lease; attempt {job.attempts} of {job.max_attempts} is retried"
        bucket, queue = report.requeued, job.queue
    else:
        values = {
            **common,
            "status": JobStatus.FAILED.value,
            "finished_at": now,
            "error_code": "worker_lost",
            "error_message": f"the worker stopped responding on each of {job.attempts} attempts",
        }
        kind, message, bucket, queue = "job.failed", values["error_message"], report.failed, None
    if not _matched(session.execute(update(Job).where(same).values(**values))):
        return None
    job_state.add_event(session, job.id, job.attempts, kind, message, {"reaper": True}, now)
    bucket.append(job.id)
    return queue


def _send(
    sessions: sessionmaker[Session], queue: JobQueue, job_id: str, job_queue: str, now: datetime
) -> None:
    """Enqueue one job. If the broker is down, mark the job never-sent (`enqueued_at` NULL), so
    the next sweep retries it at once, and carry on with the other jobs."""
    try:
        queue.enqueue(job_id, job_queue)
    except Exception:
        logger.warning("reaper: could not enqueue job %s; the next sweep retries", job_id)
        with unit_of_work(sessions) as session:
            session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.status == JobStatus.QUEUED.value,
                    Job.enqueued_at == now,
                )
                .values(enqueued_at=None)
            )


def reap(
    sessions: sessionmaker[Session],
    queue: JobQueue,
    now: datetime,
    *,
    stale_after: timedelta = DEFAULT_STALE_QUEUED,
) -> ReapReport:
    """One sweep. Enqueues only after the state change is committed."""
    report = ReapReport()
    to_enqueue: list[tuple[str, str]] = []
    with unit_of_work(sessions) as session:
        expired = session.scalars(
            select(Job)
            .where(Job.status.in_(job_state.ACTIVE), Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at)
            .limit(BATCH)
        ).all()
        for job in expired:
            q = _expire_one(session, job, now, report)
            if q is not None:
                to_enqueue.append((job.id, q))

    cutoff = now - stale_after
    with unit_of_work(sessions) as session:
        last_sent = func.coalesce(Job.enqueued_at, Job.created_at)
        # `enqueued_at IS NULL`: the API could not reach the broker at submit time, so there is
        # no message to wait for; send it on this sweep rather than after `stale_after`.
        never_sent = Job.enqueued_at.is_(None)
        stale = session.execute(
            select(Job.id, Job.queue, Job.enqueued_at)
            .where(Job.status == JobStatus.QUEUED.value, never_sent | (last_sent < cutoff))
            .order_by(last_sent)
            .limit(BATCH)
        ).all()
        for job_id, job_queue, enqueued_at in stale:
            unchanged = (
                Job.enqueued_at.is_(None) if enqueued_at is None else Job.enqueued_at == enqueued_at
            )
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value, unchanged)
                .values(enqueued_at=now)
            )
            if _matched(result):
                report.reenqueued.append(job_id)
                to_enqueue.append((job_id, job_queue))

    for job_id, job_queue in to_enqueue:
        _send(sessions, queue, job_id, job_queue, now)
    if report.total():
        logger.info(
            "reaper: requeued %s, failed %s, cancelled %s, re-enqueued %s",
            report.requeued,
            report.failed,
            report.cancelled,
            report.reenqueued,
        )
    return report
