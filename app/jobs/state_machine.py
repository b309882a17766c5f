"""The job state machine: the one module that writes a job's status.

    (new)    -submit->   queued                                              API
    queued   -cancel->   cancelled                                           API
    running  -cancel->   cancel_requested (the worker stops at a checkpoint) API
    queued   -claim->    running (attempts + 1, under a lease)               worker
    held     -succeed->  succeeded, with its artifact                        worker
    held     -end->      failed | cancelled                                  worker
    held     -time-out-> failed `time_limit` (the pool killed it)            worker's main process
    held     -retry-later-> queued, unsent (the reaper sends it on its next  worker
                         sweep) while attempts remain, else failed; cancelled
                         if asked (the blob store was unreachable)
    held     -reap->     cancelled if asked, else queued again while         reaper
                         attempts remain, else failed `worker_lost`

"held" is running or cancel_requested: a worker holds the job under a lease, which its
heartbeat renews (`renew_lease`) and its engine callbacks report through (`set_progress`).
`mark_unsent` / `mark_resent` keep `enqueued_at` for the API and the reaper.

Every transition is one conditional UPDATE ... RETURNING. Its WHERE names the state it
expects (and, once a worker holds the job, that worker and attempt), so of two writers that
race (a claim and a cancel, two reapers, a late worker and the reaper that took its job)
exactly one gets a row back and the other changes nothing. What RETURNING gives back is what
the caller needs next, so no caller reads the row again. The lifecycle event of each
transition is written with it, in the caller's transaction; the caller commits.

The API, the worker, its heartbeat and engine callbacks, and the reaper call this module;
`app/jobs/repository.py` and the others only read jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Update, case, delete, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import Artifact, Job, JobEvent, JobStatus, TraceRow, new_id
from sec_engine.spec import JobSpec


class EventKind(StrEnum):
    """The kinds of the events the service writes about a job's life. (The engine's own
    events, `teacher.started`, `checkpoint.saved`, ..., come through `add_event` as they are.)"""

    QUEUED = "job.queued"
    STARTED = "job.started"
    CANCEL_REQUESTED = "job.cancel_requested"
    CANCELLED = "job.cancelled"
    REQUEUED = "job.requeued"
    FAILED = "job.failed"
    SUCCEEDED = "job.succeeded"
    ARTIFACT_READY = "artifact.ready"


# Not finished yet: what counts against a tenant's cap of concurrent jobs.
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.CANCEL_REQUESTED.value)
# Held by a worker (under a lease the reaper watches).
HELD = (JobStatus.RUNNING.value, JobStatus.CANCEL_REQUESTED.value)


@dataclass(frozen=True)
class Attempt:
    """One worker's attempt at one job; the writes it makes are conditional on holding it."""

    job_id: str
    worker_id: str
    number: int

    def holds(self) -> ColumnElement[bool]:
        return (
            (Job.id == self.job_id)
            & (Job.worker_id == self.worker_id)
            & (Job.attempts == self.number)
            & Job.status.in_(HELD)
        )


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs of the job it claimed, from the claim's RETURNING."""

    attempt: Attempt
    max_attempts: int
    tenant_id: str
    spec: dict[str, Any]
    inputs: dict[str, Any] | None


class Reaped(StrEnum):
    REQUEUED = "requeued"
    FAILED = "failed"
    CANCELLED = "cancelled"


_INSERT_JOB = insert(Job)
_INSERT_EVENT = insert(JobEvent)


def add_event(
    session: Session,
    job_id: str,
    attempt: int,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Append one event to the job's log (Core: the submit path is hot, and no ORM row is
    needed back)."""
    row: dict[str, Any] = {
        "job_id": job_id,
        "attempt": attempt,
        "kind": str(kind),
        "message": message,
        "data": data or {},
    }
    if now is not None:
        row["created_at"] = now
    session.connection().execute(_INSERT_EVENT, row)


# --- the API: submit, enqueue failure, cancel ------------------------------------------------


def new_job(
    tenant_id: str, spec: JobSpec, *, queue: str, max_attempts: int, now: datetime
) -> dict[str, Any]:
    """Every column of a new job's row but its inputs: the API answers with these values,
    so they are known before the insert."""
    return {
        "id": new_id("job"),
        "tenant_id": tenant_id,
        "dataset_id": spec.dataset,
        "base_model": spec.base_model,
        "spec": spec.model_dump(mode="json"),
        "queue": queue,
        "status": JobStatus.QUEUED.value,
        "phase": None,
        "progress": 0.0,
        "attempts": 0,
        "max_attempts": max_attempts,
        "worker_id": None,
        "heartbeat_at": None,
        "lease_expires_at": None,
        "enqueued_at": now,
        "metrics": {},
        "targets_met": {},
        "error_code": None,
        "error_message": None,
        "started_at": None,
        "finished_at": None,
        "created_at": now,
        "updated_at": now,
    }


def submit(session: Session, row: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Insert a new job (`new_job`'s row) with its resolved inputs, and its first event."""
    session.connection().execute(_INSERT_JOB, {**row, "inputs": inputs})
    data = {"status": JobStatus.QUEUED.value}
    add_event(session, row["id"], 0, EventKind.QUEUED, "job queued", data, row["created_at"])


def mark_unsent(session: Session, job_id: str, sent_at: datetime) -> bool:
    """The broker refused the job's message: clear `enqueued_at`, which tells the reaper to
    send it on its next sweep. Only if the job is still queued and was not sent again since."""
    return _matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value, Job.enqueued_at == sent_at)
        .values(enqueued_at=None),
    )


def cancel(session: Session, job: Job, now: datetime) -> bool:
    """queued -> cancelled, running -> cancel_requested (the worker stops at its next
    checkpoint), in one statement. True if it changed the job; `job` then holds the row as
    RETURNING gave it. False if the job was neither queued nor running."""
    queued = Job.status == JobStatus.QUEUED.value
    changed = session.scalars(
        update(Job)
        .where(Job.id == job.id, Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .values(
            status=case(
                (queued, JobStatus.CANCELLED.value), else_=JobStatus.CANCEL_REQUESTED.value
            ),
            finished_at=case((queued, now), else_=Job.finished_at),
            updated_at=now,
        )
        .returning(Job)
        # The caller's `job` is refreshed from RETURNING, not marked changed.
        .execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()
    if changed is None:
        return False
    if changed.status == JobStatus.CANCELLED:
        kind, message = EventKind.CANCELLED, "job cancelled"
    else:
        kind, message = EventKind.CANCEL_REQUESTED, "cancel requested"
    add_event(session, job.id, changed.attempts, kind, message, {"status": changed.status}, now)
    return True


# --- the worker: claim, renew, progress, finish, time-out ------------------------------------


def claim(
    session: Session, job_id: str, worker_id: str, now: datetime, lease_seconds: float
) -> ClaimedJob | None:
    """queued -> running, attempts + 1, under a fresh lease; None if the job was not queued
    (a duplicate or redelivered message)."""
    row = (
        session.connection()
        .execute(
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
            .returning(Job.attempts, Job.max_attempts, Job.tenant_id, Job.spec, Job.inputs)
        )
        .one_or_none()
    )
    if row is None:
        return None
    # A retried job starts its trace afresh: the trace describes the attempt that produced the
    # result (events keep every attempt, tagged with its number).
    session.connection().execute(delete(TraceRow).where(TraceRow.job_id == job_id))
    attempt = Attempt(job_id, worker_id, row.attempts)
    add_event(
        session,
        job_id,
        attempt.number,
        EventKind.STARTED,
        f"attempt {attempt.number} of {row.max_attempts} started on {worker_id}",
        {"attempt": attempt.number, "worker_id": worker_id},
        now,
    )
    return ClaimedJob(attempt, row.max_attempts, row.tenant_id, row.spec, row.inputs)


def renew_lease(session: Session, attempt: Attempt, now: datetime, lease_seconds: float) -> bool:
    """Heartbeat. False means the job is no longer this attempt's (reaped, or finished)."""
    return _matched(
        session,
        update(Job)
        .where(attempt.holds())
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds)),
    )


def set_progress(session: Session, attempt: Attempt, phase: str, fraction: float) -> bool:
    return _matched(
        session,
        update(Job)
        .where(attempt.holds())
        .values(phase=phase, progress=min(max(fraction, 0.0), 1.0)),
    )


def held_status(session: Session, attempt: Attempt) -> JobStatus | None:
    """`running` or `cancel_requested` while `attempt` holds the job; None once it does not."""
    status = session.connection().scalar(select(Job.status).where(attempt.holds()))
    return None if status is None else JobStatus(status)


def succeed(
    session: Session,
    attempt: Attempt,
    now: datetime,
    *,
    metrics: dict[str, Any],
    targets_met: dict[str, Any],
    message: str,
    data: dict[str, Any],
    artifact: Artifact | None = None,
) -> bool:
    """running/cancel_requested (this attempt's) -> succeeded, with the job's result: its
    metrics, and its artifact row (already `ready`) when it has one. False, and nothing
    written, if the attempt no longer holds the job."""
    if not _finish(
        session,
        attempt,
        now,
        JobStatus.SUCCEEDED,
        phase=None,
        progress=1.0,
        metrics=metrics,
        targets_met=targets_met,
    ):
        return False
    if artifact is not None:
        session.add(artifact)
        ready = {
            "artifact_id": artifact.id,
            "sha256": artifact.sha256,
            "size_bytes": artifact.size_bytes,
        }
        add_event(
            session,
            attempt.job_id,
            attempt.number,
            EventKind.ARTIFACT_READY,
            "artifact stored",
            ready,
            now,
        )
    add_event(session, attempt.job_id, attempt.number, EventKind.SUCCEEDED, message, data, now)
    return True


def end(
    session: Session, attempt: Attempt, now: datetime, status: JobStatus, code: str, message: str
) -> bool:
    """running/cancel_requested (this attempt's) -> failed (with `code` and `message` as the
    job's error) or cancelled. False, and nothing written, if the attempt lost the job."""
    failed = status is JobStatus.FAILED
    assert failed or status is JobStatus.CANCELLED
    if not _finish(
        session,
        attempt,
        now,
        status,
        error_code=code if failed else None,
        error_message=message if failed else None,
    ):
        return False
    kind = EventKind.FAILED if failed else EventKind.CANCELLED
    add_event(session, attempt.job_id, attempt.number, kind, message, {"code": code}, now)
    return True


def retry_later(
    session: Session, attempt: Attempt, now: datetime, *, code: str, message: str
) -> JobStatus | None:
    """The attempt could not go on for a reason outside the job (the blob store did not
    answer): running -> queued again while attempts remain, with `enqueued_at` cleared so
    the reaper's next sweep (a minute at most) sends it: that sweep is the back-off. Out of
    attempts -> failed with `code`; a requested cancel -> cancelled. The status the job got,
    or None if the attempt no longer holds it."""
    row = (
        session.connection()
        .execute(
            update(Job)
            .where(attempt.holds())
            .values(
                status=case(
                    (Job.status == JobStatus.CANCEL_REQUESTED.value, JobStatus.CANCELLED.value),
                    (Job.attempts < Job.max_attempts, JobStatus.QUEUED.value),
                    else_=JobStatus.FAILED.value,
                ),
                lease_expires_at=None,
                updated_at=now,
            )
            .returning(Job.status, Job.max_attempts)
        )
        .one_or_none()
    )
    if row is None:
        return None
    status = JobStatus(row.status)
    if status is JobStatus.QUEUED:
        values: dict[str, Any] = {
            "worker_id": None,
            "phase": None,
            "progress": 0.0,
            "enqueued_at": None,
        }
        kind = EventKind.REQUEUED
        message = f"{message}; attempt {attempt.number} of {row.max_attempts} is retried"
    elif status is JobStatus.FAILED:
        values = {"finished_at": now, "error_code": code, "error_message": message}
        kind = EventKind.FAILED
    else:
        values, kind, message = {"finished_at": now}, EventKind.CANCELLED, "cancelled"
    session.connection().execute(update(Job).where(Job.id == attempt.job_id).values(**values))
    add_event(session, attempt.job_id, attempt.number, kind, message, {"code": code}, now)
    return status


def _finish(
    session: Session, attempt: Attempt, now: datetime, status: JobStatus, **values: Any
) -> bool:
    return _matched(
        session,
        update(Job)
        .where(attempt.holds())
        .values(
            status=status.value, finished_at=now, lease_expires_at=None, updated_at=now, **values
        ),
    )


def fail_timed_out(
    session: Session, job_id: str, *, host_prefix: str, now: datetime, message: str
) -> bool:
    """running/cancel_requested (held by a process of this host) -> failed `time_limit`: the
    pool killed the job's process at the hard time limit, and a retry would only time out
    again."""
    attempts = (
        session.connection()
        .execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(HELD), Job.worker_id.startswith(host_prefix))
            .values(
                status=JobStatus.FAILED.value,
                finished_at=now,
                lease_expires_at=None,
                updated_at=now,
                error_code="time_limit",
                error_message=message,
            )
            .returning(Job.attempts)
        )
        .scalar_one_or_none()
    )
    if attempts is None:
        return False
    add_event(session, job_id, attempts, EventKind.FAILED, message, {"code": "time_limit"}, now)
    return True


# --- the reaper: expired leases, lost messages -----------------------------------------------


def reap_expired(session: Session, job: Job, now: datetime) -> Reaped | None:
    """A job whose lease ran out (`job` as the reaper read it): its worker died or hung. A
    requested cancel is honoured; else the job is queued again while attempts remain (the
    caller sends it), else it fails `worker_lost`. None if the job changed since it was read
    (a heartbeat that renewed the lease in between wins)."""
    same = (
        (Job.id == job.id)
        & (Job.status == job.status)
        & (Job.lease_expires_at == job.lease_expires_at)
        & (Job.attempts == job.attempts)
    )
    common: dict[str, Any] = {"lease_expires_at": None, "updated_at": now}
    if job.status == JobStatus.CANCEL_REQUESTED:
        outcome, kind, message = (
            Reaped.CANCELLED,
            EventKind.CANCELLED,
            "cancelled (its worker stopped)",
        )
        values = {**common, "status": JobStatus.CANCELLED.value, "finished_at": now}
    elif job.attempts < job.max_attempts:
        outcome, kind = Reaped.REQUEUED, EventKind.REQUEUED
        message = (
            f"worker {job.worker_id} stopped renewing its lease;"
            f" attempt {job.attempts} of {job.max_attempts} is retried"
        )
        values = {
            **common,
            "status": JobStatus.QUEUED.value,
            "worker_id": None,
            "phase": None,
            "progress": 0.0,
            "enqueued_at": now,
        }
    else:
        outcome, kind = Reaped.FAILED, EventKind.FAILED
        message = f"the worker stopped responding on each of {job.attempts} attempts"
        values = {
            **common,
            "status": JobStatus.FAILED.value,
            "finished_at": now,
            "error_code": "worker_lost",
            "error_message": message,
        }
    if not _matched(session, update(Job).where(same).values(**values)):
        return None
    add_event(session, job.id, job.attempts, kind, message, {"reaper": True}, now)
    return outcome


def mark_resent(
    session: Session, job_id: str, last_sent_at: datetime | None, now: datetime
) -> bool:
    """A queued job whose message is presumed lost (or was never sent) is about to be sent
    again: `enqueued_at` = now, if nobody sent it since `last_sent_at`."""
    unchanged = (
        Job.enqueued_at.is_(None) if last_sent_at is None else Job.enqueued_at == last_sent_at
    )
    return _matched(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value, unchanged)
        .values(enqueued_at=now),
    )


def _matched(session: Session, stmt: Update) -> bool:
    """Run a conditional UPDATE of one job; whether it matched (RETURNING gave its id back)."""
    return session.connection().execute(stmt.returning(Job.id)).first() is not None
