"""What the lifespan builds once per process and the dependencies hand out per request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeAlias

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from app.queue import JobQueue
from app.settings import Settings
from app.storage import BlobStore
from app.tenants.auth import Authenticator

# An alias: inside the class, the name `sessionmaker` is the field above it.
SideSessions: TypeAlias = sessionmaker[Session]


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    store: BlobStore
    job_queue: JobQueue
    # Short side transactions a request makes while it holds its own connection (claiming an
    # Idempotency-Key). A pool of their own: drawn from the request pool, 15 requests each
    # holding one connection and waiting for a second would deadlock it (the load test did).
    side_sessionmaker: SideSessions
    # One slot per connection of the request pool (see `app.deps.db_admission`).
    db_slots: asyncio.Semaphore
    # Presented key -> tenant, cached for a few seconds (app/tenants/auth.py).
    auth: Authenticator


def app_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.sec
    return state
