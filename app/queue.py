"""Enqueueing jobs for the workers, by task name.

The API never imports `workers`: it sends a message naming the task (`sec.jobs.run`), so the
API process loads neither torch nor the engine. Enqueue happens only after the job row is
committed; if the broker is down, the job stays `queued` in the database and the reaper
re-enqueues it later (the database, not the broker, is the source of truth).
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

RUN_JOB_TASK = "sec.jobs.run"


class JobQueue(Protocol):
    def enqueue(self, job_id: str, queue: str) -> None: ...


class CeleryJobQueue:
    """A producer-only Celery client: it sends, it never consumes."""

    def __init__(self, broker_url: str) -> None:
        self._celery = Celery("sec-api", broker=broker_url)
        self._celery.conf.update(
            task_serializer="json", accept_content=["json"], task_ignore_result=True
        )

    def enqueue(self, job_id: str, queue: str) -> None:
        self._celery.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


class RecordingJobQueue:
    """For unit tests of the API: remembers what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def enqueue(self, job_id: str, queue: str) -> None:
        self.sent.append((job_id, queue))
