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
from dataclasses import dataclass

import anyio
from fastapi.sse import ServerSentEvent
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.db.models import Job, JobEvent, JobStatus, TraceRow
from app.jobs import repository as repo
from app.jobs.schemas import JobEventOut, TraceRowOut

BATCH = 200


@dataclass(frozen=True)
class _Poll:
    status: str | None
    state: dict[str, object] | None
    trace: Sequence[TraceRow]
    events: Sequence[JobEvent]


def _poll(factory: sessionmaker[Session], job_id: str, after: int, after_step: int | None) -> _Poll:
    with factory() as session:
        # Status first, then the rest: if the status read is terminal, the final phase and
        # progress, every trace row and every event the worker wrote before finishing are
        # already committed, and the reads below see them.
        status = repo.status_of(session, job_id)
        state: dict[str, object] | None = None
        trace: Sequence[TraceRow] = []
        if after_step is not None:
            job = session.get(Job, job_id)
            if job is not None:
                state = {"status": job.status, "phase": job.phase, "progress": job.progress}
                trace = repo.trace_after(session, job_id, after_step, BATCH)
        events = repo.events_after(session, job_id, after, BATCH)
        return _Poll(status, state, trace, events)


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
        poll = await run_in_threadpool(_poll, factory, job_id, cursor, trace_after)
        if poll.state is not None and poll.state != last_state:
            yield ServerSentEvent(event="status", data=poll.state)
            last_state = poll.state
        for row in poll.trace:
            yield ServerSentEvent(event="trace", data=TraceRowOut.from_row(row))
            trace_after = row.step
        for event in poll.events:
            yield ServerSentEvent(data=JobEventOut.from_row(event), id=str(event.id))
            cursor = event.id
        if len(poll.events) == BATCH or len(poll.trace) == BATCH:
            continue
        if poll.status is None or JobStatus(poll.status).terminal:
            yield ServerSentEvent(event="end", data={"status": poll.status}, id=str(cursor))
            return
        await anyio.sleep(poll_seconds)
