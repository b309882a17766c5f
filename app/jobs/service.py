"""Job business logic: validate references, enforce the per-tenant cap, create, cancel.

The job row is the source of truth. The job is handed to the broker only after the commit
(`on_commit`), so a worker never receives an id it cannot read. If the broker is down the
job stays `queued` with `enqueued_at` cleared, and the workers' reaper re-enqueues it.
"""

from __future__ import annotations

import structlog
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.datasets import repository as datasets_repo
from app.datasets.service import is_labelled
from app.db.hooks import on_commit
from app.db.models import Dataset, Job, JobStatus, utcnow
from app.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from app.jobs import repository as repo
from app.jobs.schemas import EventPage, JobEventOut, JobOut
from app.models.service import resolve_base_model
from app.queue import JobQueue
from app.settings import Settings
from app.tenants import repository as tenants_repo
from sec_engine.spec import JobSpec

log = structlog.get_logger(__name__)

JOB_QUEUE = "gpu"
STATUS_EVENT = "status"


def create_job(
    session: Session,
    settings: Settings,
    tenant_id: str,
    spec: JobSpec,
    *,
    job_queue: JobQueue,
    factory: sessionmaker[Session],
) -> Job:
    dataset = _dataset(session, tenant_id, spec.dataset, "dataset")
    if not is_labelled(dataset):
        raise InvalidInput(
            f"dataset {dataset.id!r} has no label column with at least 2 classes:"
            " upload it with purpose=labelled, or pass it as unlabelled_dataset",
            code="invalid_spec",
        )
    if spec.validation_dataset is not None:
        validation = _dataset(session, tenant_id, spec.validation_dataset, "validation_dataset")
        if not is_labelled(validation):
            raise InvalidInput(
                f"validation_dataset {validation.id!r} needs labels with at least 2 classes",
                code="invalid_spec",
            )
        if validation.has_pairs != dataset.has_pairs:
            raise InvalidInput(
                "dataset and validation_dataset must both be sentence pairs or both single texts",
                code="invalid_spec",
            )
    if spec.unlabelled_dataset is not None:
        pool = _dataset(session, tenant_id, spec.unlabelled_dataset, "unlabelled_dataset")
        if pool.has_pairs != dataset.has_pairs:
            raise InvalidInput(
                "dataset and unlabelled_dataset must both be sentence pairs or both single texts",
                code="invalid_spec",
            )
    resolve_base_model(session, tenant_id, spec.base_model)

    tenants_repo.lock_tenant(session, tenant_id)
    active = repo.count_active(session, tenant_id)
    if active >= settings.max_concurrent_jobs_per_tenant:
        raise TooManyRequests(
            f"{active} jobs are already queued or running; the limit per tenant is"
            f" {settings.max_concurrent_jobs_per_tenant}. Wait for one to finish or cancel one.",
            code="too_many_active_jobs",
        )

    now = utcnow()
    job = Job(
        tenant_id=tenant_id,
        dataset_id=dataset.id,
        base_model=spec.base_model,
        spec=spec.model_dump(mode="json"),
        queue=JOB_QUEUE,
        status=JobStatus.QUEUED.value,
        max_attempts=settings.job_max_attempts,
        enqueued_at=now,
    )
    session.add(job)
    session.flush()
    repo.add_event(session, job.id, STATUS_EVENT, "job queued", {"status": JobStatus.QUEUED.value})
    on_commit(session, lambda: _enqueue(job_queue, factory, job.id, job.queue))
    return job


def _dataset(session: Session, tenant_id: str, dataset_id: str, field: str) -> Dataset:
    dataset = datasets_repo.get(session, tenant_id, dataset_id)
    if dataset is None:
        raise NotFound(f"{field}: dataset {dataset_id!r} not found")
    return dataset


def _enqueue(job_queue: JobQueue, factory: sessionmaker[Session], job_id: str, queue: str) -> None:
    try:
        job_queue.enqueue(job_id, queue)
    except Exception:
        # The row is committed; clearing enqueued_at tells the reaper this job never reached
        # the broker, so it re-sends it once the broker is back.
        log.exception("enqueue_failed", job_id=job_id)
        with factory() as s, s.begin():
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                .values(enqueued_at=None)
            )


def cancel_job(session: Session, job: Job) -> Job:
    """queued → cancelled at once; running → cancel_requested (the worker stops at its next
    checkpoint); cancel_requested → unchanged; finished → 409."""
    for _ in range(3):  # the job may change state under us (a worker claiming it)
        status = JobStatus(job.status)
        if status is JobStatus.CANCEL_REQUESTED:
            return job
        if status.terminal:
            raise Conflict(f"job {job.id!r} has already {status.value}; it cannot be cancelled")
        now = utcnow()
        if status is JobStatus.QUEUED:
            done = repo.transition(
                session,
                job.id,
                from_status=JobStatus.QUEUED,
                to_status=JobStatus.CANCELLED,
                finished_at=now,
            )
            target = JobStatus.CANCELLED
        else:
            done = repo.transition(
                session, job.id, from_status=JobStatus.RUNNING, to_status=JobStatus.CANCEL_REQUESTED
            )
            target = JobStatus.CANCEL_REQUESTED
        session.refresh(job)
        if done:
            message = "job cancelled" if target is JobStatus.CANCELLED else "cancel requested"
            repo.add_event(session, job.id, STATUS_EVENT, message, {"status": target.value})
            return job
    raise Conflict(f"job {job.id!r} is changing state; retry the cancel")


def job_status(session: Session, tenant_id: str, job_id: str) -> JobOut:
    """The tenant's job as the API shows it (or 404), in one query."""
    found = repo.get_with_artifact(session, tenant_id, job_id)
    if found is None:
        raise NotFound(f"job {job_id!r} not found")
    job, artifact_id = found
    return JobOut.from_job(job, artifact_id)


def event_page(session: Session, tenant_id: str, job_id: str, after: int, limit: int) -> EventPage:
    """Events with id > `after` of the tenant's job (or 404), and whether more follow."""
    job = repo.get(session, tenant_id, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} not found")
    events = repo.events_after(session, job.id, after, limit + 1)
    page = events[:limit]
    return EventPage(
        data=[JobEventOut.from_row(e) for e in page],
        next_cursor=page[-1].id if page else after,
        has_more=len(events) > limit,
        job_status=job.status,
    )
