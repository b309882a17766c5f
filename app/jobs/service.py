"""Job business logic: validate references, enforce the per-tenant cap, create, cancel.

The job row is the source of truth. The job is handed to the broker only after the commit
(`on_commit`), so a worker never receives an id it cannot read. If the broker is down the
job stays `queued` with `enqueued_at` cleared, and the workers' reaper re-enqueues it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.datasets import repository as datasets_repo
from app.datasets.service import has_classes
from app.db.hooks import on_commit
from app.db.models import Job, JobStatus, new_id, utcnow
from app.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from app.idempotency import IdempotentRequest, Replay
from app.jobs import repository as repo
from app.jobs.schemas import EventPage, JobEventOut, JobOut
from app.models.service import resolve_base_model
from app.queue import JobQueue
from app.settings import Settings
from app.state import AppState
from app.tenants import repository as tenants_repo
from sec_engine.spec import JobSpec

log = structlog.get_logger(__name__)

JOB_QUEUE = "gpu"
STATUS_EVENT = "status"


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
    values = _new_job(settings, tenant_id, spec, now)
    body = JobOut.for_new_job(values).model_dump(mode="json")
    if idem is not None:
        replay = idem.claim_in_transaction(session, 201, body)
        if replay is not None:
            return replay
    _check_references(session, tenant_id, spec)
    tenants_repo.lock_tenant(session, tenant_id)
    active = repo.count_active(session, tenant_id)
    if active >= settings.max_concurrent_jobs_per_tenant:
        raise TooManyRequests(
            f"{active} jobs are already queued or running; the limit per tenant is"
            f" {settings.max_concurrent_jobs_per_tenant}. Wait for one to finish or cancel one.",
            code="too_many_active_jobs",
        )
    event = {"status": JobStatus.QUEUED.value}
    repo.insert_job(
        session,
        values,
        {"kind": STATUS_EVENT, "message": "job queued", "data": event, "created_at": now},
    )
    job_id, job_queue, factory = values["id"], state.job_queue, state.sessionmaker
    on_commit(session, lambda: _enqueue(job_queue, factory, job_id, JOB_QUEUE))
    return body


def _new_job(settings: Settings, tenant_id: str, spec: JobSpec, now: datetime) -> dict[str, Any]:
    """Every column of a new job's row (the response shows them before the insert)."""
    return {
        "id": new_id("job"),
        "tenant_id": tenant_id,
        "dataset_id": spec.dataset,
        "base_model": spec.base_model,
        "spec": spec.model_dump(mode="json"),
        "queue": JOB_QUEUE,
        "status": JobStatus.QUEUED.value,
        "phase": None,
        "progress": 0.0,
        "attempts": 0,
        "max_attempts": settings.job_max_attempts,
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


def _check_device(settings: Settings, spec: JobSpec) -> None:
    """A CUDA job only where the workers have a GPU: refused now, not failed on a worker
    (or queued forever) later."""
    if spec.device == "cuda" and not settings.gpu_workers:
        raise InvalidInput(
            'device: "cuda" needs a GPU worker and this deployment has none'
            ' (SEC_GPU_WORKERS is off); use "auto" or "cpu"',
            code="no_gpu_workers",
        )


def _check_references(session: Session, tenant_id: str, spec: JobSpec) -> None:
    """The spec's datasets (one query for all of them) and base model are the tenant's and
    fit the job; errors in the order a user fixes them."""
    refs = [spec.dataset, spec.validation_dataset, spec.unlabelled_dataset]
    found = datasets_repo.fits(session, tenant_id, [r for r in refs if r])
    dataset = _dataset(found, spec.dataset, "dataset")
    if not has_classes(dataset.summary):
        raise InvalidInput(
            f"dataset {spec.dataset!r} has no label column with at least 2 classes:"
            " upload it with purpose=labelled, or pass it as unlabelled_dataset",
            code="invalid_spec",
        )
    if spec.validation_dataset is not None:
        validation = _dataset(found, spec.validation_dataset, "validation_dataset")
        if not has_classes(validation.summary):
            raise InvalidInput(
                f"validation_dataset {spec.validation_dataset!r} needs labels with at least"
                " 2 classes",
                code="invalid_spec",
            )
        if validation.has_pairs != dataset.has_pairs:
            raise InvalidInput(
                "dataset and validation_dataset must both be sentence pairs or both single texts",
                code="invalid_spec",
            )
    if spec.unlabelled_dataset is not None:
        pool = _dataset(found, spec.unlabelled_dataset, "unlabelled_dataset")
        if pool.has_pairs != dataset.has_pairs:
            raise InvalidInput(
                "dataset and unlabelled_dataset must both be sentence pairs or both single texts",
                code="invalid_spec",
            )
    resolve_base_model(session, tenant_id, spec.base_model)


def _dataset(
    found: dict[str, datasets_repo.DatasetFit], dataset_id: str, field: str
) -> datasets_repo.DatasetFit:
    dataset = found.get(dataset_id)
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
