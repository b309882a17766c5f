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

Every change is a conditional UPDATE on the state that was read (`app/jobs/state_machine.py`),
so two reapers running at once (beat on two machines) cannot both act on one job, and the
sweep is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job, JobStatus
from app.db.session import unit_of_work
from app.jobs import state_machine
from app.jobs.state_machine import Reaped
from app.queue import JobQueue

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

    def bucket(self, outcome: Reaped) -> list[str]:
        return {
            Reaped.REQUEUED: self.requeued,
            Reaped.FAILED: self.failed,
            Reaped.CANCELLED: self.cancelled,
        }[outcome]


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
            state_machine.mark_unsent(session, job_id, now)


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
            .where(Job.status.in_(state_machine.HELD), Job.lease_expires_at < now)
            .order_by(Job.lease_expires_at)
            .limit(BATCH)
        ).all()
        for job in expired:
            outcome = state_machine.reap_expired(session, job, now)
            if outcome is not None:
                report.bucket(outcome).append(job.id)
            if outcome is Reaped.REQUEUED:
                to_enqueue.append((job.id, job.queue))

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
            if state_machine.mark_resent(session, job_id, enqueued_at, now):
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
