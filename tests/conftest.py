"""Shared fixtures: private databases and Redis dbs for tests that need real services.

Every test gets its OWN Postgres database (random name, dropped afterwards) and its own Redis
logical database, because several test runs share one Postgres and one Redis. When a service
is down, these fixtures raise: tests that need it fail, they are never skipped.

Override the servers with SEC_TEST_POSTGRES_URL (a server URL, its database is ignored) and
SEC_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

POSTGRES_SERVER = os.environ.get(
    "SEC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER = os.environ.get("SEC_TEST_REDIS_URL", "redis://127.0.0.1:6379")
_REDIS_LOCK_KEY = "sec-test:db-owner"


def migrate(database_url: str) -> None:
    """Build a test database the way production does: by running the Alembic migrations."""
    from app.db.migrate import upgrade

    upgrade(database_url)


def _admin_conninfo() -> str:
    return (
        make_url(POSTGRES_SERVER).set(drivername="postgresql").render_as_string(hide_password=False)
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sec.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database; dropped (connections and all) after the test."""
    import psycopg

    name = f"sec_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis logical database (1-15), claimed with a lock key and flushed after."""
    import redis

    token = uuid.uuid4().hex
    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{db}", socket_connect_timeout=5)
        # Claim an empty db nobody holds; the expiry frees it if a test run is killed.
        if client.set(_REDIS_LOCK_KEY, token, nx=True, ex=3600):
            if client.dbsize() != 1:  # someone else keeps data here: leave it alone
                client.delete(_REDIS_LOCK_KEY)
                client.close()
                continue
            try:
                yield f"{REDIS_SERVER}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no free Redis database (1-15) for this test")
