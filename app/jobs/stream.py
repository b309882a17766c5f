"""The server-sent-events feed of a job's events.

Each event is sent with `id: <event id>`, so a browser's EventSource resumes after a
reconnect by sending `Last-Event-ID`, and any client may resume with `?after=`. Job events
carry their `kind` inside the JSON data (one `onmessage` handler sees them all); the stream
ends with a named `end` event once the job is finished and every event has been sent.
The database is polled (a fresh short session per poll, in the thread pool, so the stream
holds no transaction open between polls); FastAPI adds keep-alive comments.

With `live` on (`?live=true`, what the dashboard and `sec jobs watch` use), the same stream
also carries named `status` events (status, phase, progress; sent when they change) and
`trace` events (one per new controller step, λ1/λ2 and metrics). These carry no `id`, so
`Last-Event-ID` keeps naming the last job event; a client resumes the trace with
`?trace_after=<last step seen>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
from fastapi.sse import ServerSentEvent
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.db.models import Job, JobEvent, JobStatus, TraceRow
from app.jobs import repository as repo
from app.jobs.schemas import JobEventOut, TraceRowOut

BATCH = 200


def _poll(
    factory: sessionmaker[Session], job_id: str, after: int
) -> tuple[str | None, Sequence[JobEvent]]:
    with factory() as session:
        # Status first, then events: if the status read is terminal, every event the worker
        # wrote before finishing is already committed and the events query sees it.
        status = repo.status_of(session, job_id)
        events = repo.events_after(session, job_id, after, BATCH)
        return status, events


def _poll_live(
    factory: sessionmaker[Session], job_id: str, after_step: int
) -> tuple[dict[str, object] | None, Sequence[TraceRow]]:
    with factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            return None, []
        state: dict[str, object] = {
            "status": job.status,
            "phase": job.phase,
            "progress": job.progress,
        }
        return state, repo.trace_after(session, job_id, after_step, BATCH)


async def job_event_stream(
    factory: sessionmaker[Session],
    job_id: str,
    after: int,
    poll_seconds: float,
    *,
    trace_after: int | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """Job events from `after`; with `trace_after` set, also `status` and `trace` events."""
    cursor = after
    last_state: dict[str, object] | None = None
    while True:
        # The live part is read before the status check below, so a terminal status means
        # the last trace rows and the final progress were sent before `end`.
        if trace_after is not None:
            state, rows = await run_in_threadpool(_poll_live, factory, job_id, trace_after)
            if state is not None and state != last_state:
                yield ServerSentEvent(event="status", data=state)
                last_state = state
            for row in rows:
                yield ServerSentEvent(event="trace", data=TraceRowOut.from_row(row))
                trace_after = row.step
        status, events = await run_in_threadpool(_poll, factory, job_id, cursor)
        for event in events:
            yield ServerSentEvent(data=JobEventOut.from_row(event), id=str(event.id))
            cursor = event.id
        if len(events) == BATCH:
            continue
        if status is None or JobStatus(status).terminal:
            yield ServerSentEvent(event="end", data={"status": status}, id=str(cursor))
            return
        await anyio.sleep(poll_seconds)
