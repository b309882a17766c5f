"""What an API process does once at start-up, before it takes requests, so that a burst of
first requests (100 clients starting at once) does not pay for it request by request:

- open every connection of the request pool, and on each run the hot routes' reads (with
  ids that match nothing): Postgres loads its catalog entries for those tables once per
  connection, SQLAlchemy compiles each statement once per process, and psycopg sets up
  its per-connection state;
- build the Celery producer's result backend, and connect its pooled producers to the broker
  with the queues declared;
- (when the app is built) cache redis-py's own version (`cache_redis_lib_version`).

Best effort: a database or broker that is down is logged and left to the first request
(which fails or retries as it would have anyway); start-up goes on.
"""

from __future__ import annotations

import functools

import structlog
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import repository as artifacts_repo
from app.datasets import repository as datasets_repo
from app.jobs import repository as jobs_repo
from app.queue import JobQueue
from app.tenants import repository as tenants_repo

log = structlog.get_logger(__name__)

_NOTHING = ""  # no row has this id


def warm_up(sessions: sessionmaker[Session], connections: int, job_queue: JobQueue) -> None:
    held: list[Session] = []
    try:
        for _ in range(connections):  # all held at once, so each is a connection of its own
            session = sessions()
            held.append(session)
            _hot_reads(session)
    except Exception:
        log.warning("database_warm_up_failed", exc_info=True)
    finally:
        for session in held:
            session.rollback()
            session.close()
    warm = getattr(job_queue, "warm_up", None)
    if warm is not None:
        warm(connections)


def cache_redis_lib_version() -> None:
    """redis-py (7.x) looks its own version up in the installed packages' metadata for every
    new connection, scanning site-packages each time (about a millisecond, more under load):
    the first requests of a burst open connections for the broker and the rate limiter at
    the same moment. The version does not change while the process runs, so it is cached."""
    import redis.utils

    if not hasattr(redis.utils.get_lib_version, "cache_info"):
        redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)


def _hot_reads(session: Session) -> None:
    tenants_repo.get_key_and_tenant(session, _NOTHING)
    jobs_repo.get_with_artifact(session, _NOTHING, _NOTHING)
    jobs_repo.count_active(session, _NOTHING)
    jobs_repo.status_and_events(session, _NOTHING, _NOTHING, 0, 1)
    datasets_repo.fits(session, _NOTHING, [_NOTHING])
    artifacts_repo.get(session, _NOTHING, _NOTHING)
