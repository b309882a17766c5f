"""What the lifespan builds once per process and the dependencies hand out per request."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from app.queue import JobQueue
from app.settings import Settings
from app.storage import ArtifactStore


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: Engine
    sessionmaker: sessionmaker[Session]
    store: ArtifactStore
    job_queue: JobQueue


def app_state(conn: HTTPConnection) -> AppState:
    state: AppState = conn.app.state.sec
    return state
