"""HTTP routes for jobs, their events (JSON and SSE) and their controller trace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from app import idempotency
from app.artifacts import repository as artifacts_repo
from app.artifacts.schemas import ArtifactList, ArtifactOut
from app.db.models import JobStatus
from app.deps import JobDep, SessionDep, StateDep, TenantDep, run_and_commit
from app.jobs import repository as repo
from app.jobs import service
from app.jobs.schemas import EventPage, JobOut, TracePage, TraceRowOut
from app.jobs.stream import job_event_stream
from app.pagination import CURSOR_MAX, DEFAULT_LIMIT, MAX_LIMIT
from app.schemas import ERROR_RESPONSES, Page
from app.state import app_state
from sec_engine.spec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut)
async def create_job(
    *,
    spec: JobSpec,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    idempotency_key: idempotency.IdempotencyKeyHeader = None,
) -> Response:
    """Submit a compression job. Retry safely with the same `Idempotency-Key`."""
    # One thread-pool hop: the key's claim, the checks, the job's row and the commit in one
    # transaction, then the broker publish (app/jobs/service.py).
    idem = idempotency.for_request(
        idempotency_key, request, tenant.id, spec.model_dump(mode="json", exclude_unset=True)
    )
    answer = await run_and_commit(
        session, service.submit_job, app_state(request), tenant.id, spec, idem
    )
    if isinstance(answer, idempotency.Replay):
        return idempotency.replay_response(answer)
    # The body is the JobOut already built for the Idempotency-Key row: encoded once here.
    return Response(
        orjson.dumps(answer),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={"Location": f"/v1/jobs/{answer['id']}"},
    )


@router.get("", response_model=Page[JobOut])
def list_jobs(
    *,
    session: SessionDep,
    tenant: TenantDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> Page[JobOut]:
    """List the tenant's jobs, newest first, optionally by status."""
    jobs, next_cursor = repo.list_page(
        session, tenant.id, status=status_filter, cursor=cursor, limit=limit
    )
    artifacts = repo.artifact_ids(session, [j.id for j in jobs])
    return Page(
        data=[JobOut.from_job(j, artifacts.get(j.id)) for j in jobs],
        next_cursor=next_cursor,
        has_more=next_cursor is not None,
    )


@router.get("/{job_id}", response_model=JobOut)
async def get_job(*, job_id: str, session: SessionDep, tenant: TenantDep) -> JobOut:
    """Status, phase, progress, metrics, targets met, error and artifact of one job."""
    # The hottest read (clients poll it): one query in one thread-pool hop.
    return await run_and_commit(session, service.job_status, tenant.id, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(
    *,
    job: JobDep,
    request: Request,
    session: SessionDep,
    idempotency_key: idempotency.IdempotencyKeyHeader = None,
) -> JobOut | JSONResponse:
    """Cancel: a queued job ends at once, a running one stops at its next checkpoint."""
    idem = idempotency.begin(idempotency_key, request, session, job.tenant_id, {})
    if isinstance(idem, JSONResponse):
        return idem
    job = service.cancel_job(session, job)
    out = JobOut.from_job(job, repo.artifact_ids(session, [job.id]).get(job.id))
    if idem is not None:
        idem.complete(session, status.HTTP_200_OK, out.model_dump(mode="json"))
    return out


@router.get("/{job_id}/events", response_model=EventPage)
async def list_events(
    *,
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    after: Annotated[
        int, Query(ge=0, le=CURSOR_MAX, description="Return events with id > after")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """Typed job events in order; poll with `?after=<next_cursor>`."""
    return await run_and_commit(session, service.event_page, tenant.id, job_id, after, limit)


@router.get("/{job_id}/events/stream", response_class=EventSourceResponse)
async def stream_events(
    *,
    job: JobDep,
    state: StateDep,
    after: Annotated[int | None, Query(ge=0, le=CURSOR_MAX)] = None,
    # Checked here, with the parameters, rather than in the body: this route's body runs
    # once the response has started, where an error can no longer be a 422.
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=CURSOR_MAX,
            description="Resume after this event id (what a browser's EventSource sends)",
        ),
    ] = None,
    live: Annotated[
        bool, Query(description="Also send `status` and `trace` (controller step) events")
    ] = False,
    trace_after: Annotated[
        int,
        Query(ge=-1, le=CURSOR_MAX, description="With live: send trace steps after this one"),
    ] = -1,
) -> AsyncIterator[ServerSentEvent]:
    """Job events as server-sent events; ends with an `end` event when the job is done."""
    start = max(after or 0, last_event_id or 0)
    async for event in job_event_stream(
        state.sessionmaker,
        job.id,
        start,
        state.settings.sse_poll_seconds,
        trace_after=trace_after if live else None,
    ):
        yield event


@router.get("/{job_id}/trace", response_model=TracePage)
def get_trace(
    *,
    job: JobDep,
    session: SessionDep,
    after_step: Annotated[int, Query(ge=-1, le=CURSOR_MAX)] = -1,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> TracePage:
    """The Synergy Controller trace: per step λ1, λ2, loss parts, metrics and the decision."""
    rows = repo.trace_after(session, job.id, after_step, limit + 1)
    page = rows[:limit]
    return TracePage(
        data=[TraceRowOut.from_row(r) for r in page],
        next_cursor=page[-1].step if page else after_step,
        has_more=len(rows) > limit,
    )


@router.get("/{job_id}/artifacts", response_model=ArtifactList)
def list_job_artifacts(*, job: JobDep, session: SessionDep) -> ArtifactList:
    """The job's artifacts (one per job once it succeeded)."""
    rows = artifacts_repo.for_job(session, job.tenant_id, job.id)
    return ArtifactList(data=[ArtifactOut.from_row(a) for a in rows])
