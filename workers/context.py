"""What a worker process holds while it runs jobs: settings, a DB sessionmaker, the artifact store.

Built once per pool child (after the fork, so no DB connection is shared across processes)
and passed explicitly to the job logic, which keeps that logic callable from tests with a
SQLite database and a fake store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from app.db.models import utcnow
from app.db.session import make_engine, make_sessionmaker
from app.settings import Settings


class BlobStore(Protocol):
    """The part of `app.storage`'s store the worker uses: upload one finished file under a key,
    and clear what killed uploads left behind."""

    def put_file(self, key: str, path: Path) -> object: ...

    def sweep_partial_writes(self, older_than_seconds: float) -> int: ...


def default_worker_id() -> str:
    """Host and pid: enough to tell which process holds a job's lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    store: BlobStore
    worker_id: str = field(default_factory=default_worker_id)
    clock: Callable[[], datetime] = utcnow


def build_context(settings: Settings) -> WorkerContext:
    """The production context: a real engine/sessionmaker and the configured artifact store."""
    from app.storage import store_from_settings  # the API package's store; imported lazily

    sessions = make_sessionmaker(make_engine(settings.database_url))
    return WorkerContext(settings=settings, sessions=sessions, store=store_from_settings(settings))
