"""The job state transitions a worker makes, each one a conditional UPDATE.

Every transition names the state it expects (and, once claimed, the worker and attempt that
own the job) in its WHERE clause, and reports whether it matched. That is what makes the
task idempotent: a redelivered message, a duplicate, or a worker whose lease the reaper has
already taken away changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import Job, JobEvent, JobStatus, TraceRow

ACTIVE = (JobStatus.RUNNING.value, JobStatus.CANCEL_REQUESTED.value)


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def owned_by(job_id: str, worker_id: str, attempt: int) -> ColumnElement[bool]:
    """The job is still this worker's, in this attempt, and not finished."""
    return (
        (Job.id == job_id)
        & (Job.worker_id == worker_id)
        & (Job.attempts == attempt)
        & Job.status.in_(ACTIVE)
    )


def claim(
    session: Session, job_id: str, worker_id: str, now: datetime, lease_seconds: float
) -> bool:
    """queued -> running, attempts + 1, with a fresh lease. False if the job was not queued."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            attempts=Job.attempts + 1,
            worker_id=worker_id,
            started_at=now,
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            phase="preparing",
            progress=0.0,
            error_code=None,
            error_message=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return False
    # A retried job starts its trace afresh: the trace describes the attempt that produced the
    # result (events keep every attempt, tagged with its number).
    session.execute(delete(TraceRow).where(TraceRow.job_id == job_id))
    return True


def renew_lease(
    session: Session,
    job_id: str,
    worker_id: str,
    attempt: int,
    now: datetime,
    lease_seconds: float,
) -> bool:
    """Heartbeat. False means the job is no longer ours (reaped, or finished elsewhere)."""
    result = session.execute(
        update(Job)
        .where(owned_by(job_id, worker_id, attempt))
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def set_progress(
    session: Session, job_id: str, worker_id: str, attempt: int, phase: str, fraction: float
) -> bool:
    result = session.execute(
        update(Job)
        .where(owned_by(job_id, worker_id, attempt))
        .values(phase=phase, progress=min(max(fraction, 0.0), 1.0))
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def finish(
    session: Session,
    job_id: str,
    worker_id: str,
    attempt: int,
    now: datetime,
    status: JobStatus,
    **values: Any,
) -> bool:
    """running/cancel_requested (ours) -> a terminal status, with the given extra columns."""
    assert status.terminal
    result = session.execute(
        update(Job)
        .where(owned_by(job_id, worker_id, attempt))
        .values(
            status=status.value, finished_at=now, lease_expires_at=None, updated_at=now, **values
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def add_event(
    session: Session,
    job_id: str,
    attempt: int,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    event = JobEvent(job_id=job_id, attempt=attempt, kind=kind, message=message, data=data or {})
    if now is not None:
        event.created_at = now
    session.add(event)


def fail_timed_out(
    session: Session, job_id: str, *, host_prefix: str, now: datetime, message: str
) -> bool:
    """running (held by a process on this host) -> failed `time_limit`, with its event."""
    row = session.execute(
        select(Job.attempts).where(
            Job.id == job_id, Job.status.in_(ACTIVE), Job.worker_id.startswith(host_prefix)
        )
    ).one_or_none()
    if row is None:
        return False
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(ACTIVE),
            Job.attempts == row.attempts,
            Job.worker_id.startswith(host_prefix),
        )
        .values(
            status=JobStatus.FAILED.value,
            finished_at=now,
            lease_expires_at=None,
            updated_at=now,
            error_code="time_limit",
            error_message=message,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        return False
    add_event(session, job_id, row.attempts, "job.failed", message, {"code": "time_limit"}, now)
    return True
