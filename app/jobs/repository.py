"""Queries for jobs, their events and trace rows. Jobs are filtered by tenant; events and
trace rows are reached only through a job the caller already owns. Reads only: every write
of a job's state is `app/jobs/state_machine.py`'s."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.orm import Session

from app.db.models import Artifact, Job, JobEvent, JobStatus, TraceRow
from app.jobs.state_machine import UNFINISHED
from app.pagination import paginate


def get(session: Session, tenant_id: str, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


# Built once: status polls are the hottest read of the control API.
_JOB_AND_ARTIFACT = (
    select(Job, Artifact.id)
    .outerjoin(Artifact, Artifact.job_id == Job.id)  # at most one artifact per job
    .where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))
)


def get_with_artifact(
    session: Session, tenant_id: str, job_id: str
) -> tuple[Job, str | None] | None:
    """The tenant's job and its artifact's id, in one query."""
    row = session.execute(_JOB_AND_ARTIFACT, {"job_id": job_id, "tenant_id": tenant_id}).first()
    return None if row is None else (row[0], row[1])


def list_page(
    session: Session,
    tenant_id: str,
    *,
    status: JobStatus | None,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Job], str | None]:
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status.value)
    return paginate(session, stmt, Job.created_at, Job.id, cursor=cursor, limit=limit)


# The submit path's cap check, built once and run on the session's connection (Core: no
# ORM flush, no statement built per request).
_COUNT_ACTIVE = (
    select(func.count())
    .select_from(Job)
    .where(Job.tenant_id == bindparam("tenant_id"), Job.status.in_(UNFINISHED))
)


def count_active(session: Session, tenant_id: str) -> int:
    return session.connection().scalar(_COUNT_ACTIVE, {"tenant_id": tenant_id}) or 0


def artifact_ids(session: Session, job_ids: Sequence[str]) -> dict[str, str]:
    if not job_ids:
        return {}
    rows = session.execute(
        select(Artifact.job_id, Artifact.id).where(Artifact.job_id.in_(job_ids))
    ).all()
    return {job_id: artifact_id for job_id, artifact_id in rows}  # noqa: C416 - rows are Row tuples


_EVENTS_AFTER = (
    select(JobEvent)
    .where(JobEvent.job_id == bindparam("job_id"), JobEvent.id > bindparam("after"))
    .order_by(JobEvent.id)
    .limit(bindparam("limit"))
)


def events_after(session: Session, job_id: str, after: int, limit: int) -> Sequence[JobEvent]:
    return session.scalars(_EVENTS_AFTER, {"job_id": job_id, "after": after, "limit": limit}).all()


# Built once: event polls are, with status, the hottest reads of the control API. The job's
# status and its events after the cursor in one query; the outer join keeps a row (with no
# event) for a job that has none, so "no row" means "not the tenant's job".
_STATUS_AND_EVENTS = (
    select(Job.status, JobEvent)
    .outerjoin(JobEvent, and_(JobEvent.job_id == Job.id, JobEvent.id > bindparam("after")))
    .where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))
    .order_by(JobEvent.id)
    .limit(bindparam("limit"))
)


def status_and_events(
    session: Session, tenant_id: str, job_id: str, after: int, limit: int
) -> tuple[str, list[JobEvent]] | None:
    """The tenant's job's status and up to `limit` of its events with id > `after` (None when
    the tenant has no such job), in one query."""
    rows = session.execute(
        _STATUS_AND_EVENTS,
        {"job_id": job_id, "tenant_id": tenant_id, "after": after, "limit": limit},
    ).all()
    if not rows:
        return None
    return rows[0][0], [event for _, event in rows if event is not None]


def trace_after(session: Session, job_id: str, after_step: int, limit: int) -> Sequence[TraceRow]:
    return session.scalars(
        select(TraceRow)
        .where(TraceRow.job_id == job_id, TraceRow.step > after_step)
        .order_by(TraceRow.step)
        .limit(limit)
    ).all()


def status_of(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))
