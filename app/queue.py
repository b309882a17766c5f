"""Enqueueing jobs for the workers, by task name.

The API never imports `workers`: it sends a message naming the task (`sec.jobs.run`), so the
API process loads neither torch nor the engine. Enqueue happens only after the job row is
committed; if the broker is down, the job stays `queued` in the database and the reaper
re-enqueues it later (the database, not the broker, is the source of truth). That is why
`CeleryJobQueue.enqueue` gives up after two quick retries instead of hanging the request.

The queue and task names live here, not in `workers/`, because both sides need them and the
dependency runs `workers -> app`, never the other way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, Protocol

from celery import Celery
from kombu.transport import redis as redis_transport

logger = logging.getLogger(__name__)


class QueueName(StrEnum):
    """Celery queues. `gpu` runs the engine (one job per device); `cpu` runs light work."""

    GPU = "gpu"
    CPU = "cpu"


class TaskName(StrEnum):
    """Explicit dotted task names: messages carry these, never a Python import path."""

    RUN_JOB = "sec.jobs.run"
    REAP = "sec.jobs.reap"
    SWEEP_PARTIAL_WRITES = "sec.artifacts.sweep_partial_writes"


RUN_JOB_TASK = TaskName.RUN_JOB.value

# A broker that is down must not hang an API request: two quick retries, then the reaper's turn.
_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5}


class JobQueue(Protocol):
    def enqueue(self, job_id: str, queue: str) -> None: ...


class _PublishingRedisChannel(redis_transport.Channel):
    """kombu's Redis channel, with one Redis client per channel for publishing: kombu builds a
    new `redis.Redis` for every message it sends (about a sixth of a submit's API CPU, most of
    it copying redis-py's table of response callbacks). The client shares the channel's
    connection pool, as kombu's per-message clients do, and is thread-safe. Only for a
    producer: this Celery app never consumes."""

    _publisher: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        if self._publisher is None:
            self._publisher = self._create_client()  # type: ignore[no-untyped-call]
        yield self._publisher


class _PublishingRedisTransport(redis_transport.Transport):
    Channel = _PublishingRedisChannel


class CeleryJobQueue:
    """A producer-only Celery client: it sends, it never consumes."""

    def __init__(self, broker_url: str) -> None:
        self._celery = Celery("sec-api", broker=broker_url)
        if broker_url.split("://", 1)[0] in ("redis", "rediss"):
            self._celery.conf.broker_transport = _PublishingRedisTransport
        self._celery.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_ignore_result=True,
            broker_connection_retry_on_startup=True,
            # The (disabled) result backend, built once for the process: Celery otherwise
            # builds one per thread that sends, each scanning every installed package's entry
            # points, in the first submit of each API thread (tens of ms in a burst).
            result_backend_thread_safe=True,
        )

    def enqueue(self, job_id: str, queue: str) -> None:
        """Send `sec.jobs.run(job_id)` to `queue`. Raises if the broker stays down after two
        quick retries; the caller logs it and the reaper re-sends the (committed) job later."""
        self._celery.send_task(
            RUN_JOB_TASK,
            args=[job_id],
            queue=queue,
            retry=True,
            retry_policy=_PUBLISH_RETRY_POLICY,
            ignore_result=True,
        )

    def warm_up(self, connections: int) -> None:
        """At start-up: build the result backend, and connect up to `connections` producers
        of Celery's pool to the broker with the queues declared on each, so that the first
        requests, sending at the same moment, neither connect nor declare (each would on its
        own pooled connection). Best effort: a broker that is down is the first enqueue's
        business (and then the reaper's)."""
        pool = self._celery.producer_pool
        held = []
        try:
            _ = self._celery.backend
            queues = [self._celery.amqp.queues[q.value] for q in QueueName]
            for _ in range(min(connections, pool.limit or connections)):
                producer = pool.acquire(block=False)
                held.append(producer)
                producer.connection.ensure_connection(max_retries=1)
                for queue in queues:
                    producer.maybe_declare(queue)
        except Exception:
            logger.warning("broker warm-up failed; the first enqueue will connect", exc_info=True)
        finally:
            for producer in held:
                producer.release()

    def request_reap(self) -> None:
        """Ask a worker to run the reaper now (the launcher does this at start-up)."""
        try:
            self._celery.send_task(
                TaskName.REAP.value,
                queue=QueueName.CPU.value,
                retry=True,
                retry_policy=_PUBLISH_RETRY_POLICY,
            )
        except Exception:
            logger.warning("could not request a reaper run", exc_info=True)

    def close(self) -> None:
        """Release the broker connection pool (at API shutdown)."""
        self._celery.close()
