"""The server-sent-events feed of a job's events.

Each event is sent with `id: <event id>`, so a browser's EventSource resumes after a
reconnect by sending `Last-Event-ID`, and any client may resume with `?after=`. Job events
carry their `kind` inside the JSON data (one `onmessage` handler sees them all); the stream
ends with a named `end` event once the job is finished and every event has been sent.
The database is polled (a fresh short session per poll, in the thread pool, so the stream
holds no transaction open between polls); FastAPI adds keep-alive comments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
from fastapi.sse import ServerSentEvent
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.db.models import JobEvent, JobStatus
from app.jobs import repository as repo
from app.jobs.schemas import JobEventOut

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


async def job_event_stream(
    factory: sessionmaker[Session], job_id: str, after: int, poll_seconds: float
) -> AsyncIterator[ServerSentEvent]:
    cursor = after
    while True:
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
