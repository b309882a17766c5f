"""Job business logic: check the submit, enforce the per-tenant cap, create, cancel.

The job row is the source of truth, and `app/jobs/state_machine.py` is the only writer of
its status. The job is handed to the broker only after the commit (`on_commit`), so a worker
never receives an id it cannot read. If the broker is down the job stays `queued` with
`enqueued_at` cleared, and the workers' reaper re-enqueues it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from app.db.hooks import on_commit
from app.db.models import Job, JobStatus, utcnow
from app.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from app.idempotency import IdempotentRequest, Replay
from app.jobs import inputs as job_inputs
from app.jobs import repository as repo
from app.jobs import state_machine
from app.jobs.schemas import EventPage, JobEventOut, JobOut
from app.queue import JobQueue
from app.settings import Settings
from app.state import AppState
from app.tenants import repository as tenants_repo
from sec_engine.spec import JobSpec

log = structlog.get_logger(__name__)

JOB_QUEUE = "gpu"


def submit_job(
    session: Session,
    state: AppState,
    tenant_id: str,
    spec: JobSpec,
    idem: IdempotentRequest | None = None,
) -> dict[str, Any] | Replay:
    """Create and (after the commit) enqueue a job, in the request's one transaction: the
    new job's response body, or the stored response when `idem`'s key was already used.

    The job's row is written with all its values known up front, so its response is known
    before the effect: the Idempotency-Key row goes in first, already completed, and the
    checks, the job and its first event follow in the same transaction (one commit). The
    tenant's row lock serialises the cap check and the insert across API replicas."""
    settings = state.settings
    _check_device(settings, spec)
    now = utcnow()
    row = state_machine.new_job(
        tenant_id, spec, queue=JOB_QUEUE, max_attempts=settings.job_max_attempts, now=now
    )
    body = JobOut.for_new_job(row).model_dump(mode="json")
    if idem is not None:
        replay = idem.claim_in_transaction(session, 201, body)
        if replay is not None:
            return replay
    inputs = job_inputs.resolve(session, tenant_id, spec)
    tenants_repo.lock_tenant(session, tenant_id)
    active = repo.count_active(session, tenant_id)
    if active >= settings.max_concurrent_jobs_per_tenant:
        raise TooManyRequests(
            f"{active} jobs are already queued or running; the limit per tenant is"
            f" {settings.max_concurrent_jobs_per_tenant}. Wait for one to finish or cancel one.",
            code="too_many_active_jobs",
        )
    state_machine.submit(session, row, inputs)
    job_id, job_queue, factory = row["id"], state.job_queue, state.sessionmaker
    on_commit(session, lambda: _enqueue(job_queue, factory, job_id, JOB_QUEUE, now))
    return body


def _check_device(settings: Settings, spec: JobSpec) -> None:
    """A CUDA job only where the workers have a GPU: refused now, not failed on a worker
    (or queued forever) later."""
    if spec.device == "cuda" and not settings.gpu_workers:
        raise InvalidInput(
            'device: "cuda" needs a GPU worker and this deployment has none'
            ' (SEC_GPU_WORKERS is off); use "auto" or "cpu"',
            code="no_gpu_workers",
        )


def _enqueue(
    job_queue: JobQueue,
    factory: sessionmaker[Session],
    job_id: str,
    queue: str,
    sent_at: datetime,
) -> None:
    try:
        job_queue.enqueue(job_id, queue)
    except Exception:
        # The row is committed; clearing enqueued_at tells the reaper this job never reached
        # the broker, so it re-sends it once the broker is back.
        log.exception("enqueue_failed", job_id=job_id)
        with factory() as s, s.begin():
            state_machine.mark_unsent(s, job_id, sent_at)


def cancel_job(session: Session, job: Job) -> Job:
    """queued -> cancelled at once; running -> cancel_requested (the worker stops at its next
    checkpoint); cancel_requested -> unchanged; finished -> 409."""
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        if state_machine.cancel(session, job, utcnow()):
            return job
        # It changed between our read and the cancel (a worker finished it, the reaper
        # cancelled it). From where it is now it can only be cancel_requested or finished.
        session.refresh(job)
    status = JobStatus(job.status)
    if status.terminal:
        raise Conflict(f"job {job.id!r} has already {status.value}; it cannot be cancelled")
    return job


def job_status(session: Session, tenant_id: str, job_id: str) -> JobOut:
    """The tenant's job as the API shows it (or 404), in one query."""
    found = repo.get_with_artifact(session, tenant_id, job_id)
    if found is None:
        raise NotFound(f"job {job_id!r} not found")
    job, artifact_id = found
    return JobOut.from_job(job, artifact_id)


def event_page(session: Session, tenant_id: str, job_id: str, after: int, limit: int) -> EventPage:
    """Events with id > `after` of the tenant's job (or 404), and whether more follow."""
    found = repo.status_and_events(session, tenant_id, job_id, after, limit + 1)
    if found is None:
        raise NotFound(f"job {job_id!r} not found")
    status, events = found
    page = events[:limit]
    return EventPage(
        data=[JobEventOut.from_row(e) for e in page],
        next_cursor=page[-1].id if page else after,
        has_more=len(events) > limit,
        job_status=status,
    )
