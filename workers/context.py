"""What a worker process holds while it runs jobs: settings, a DB sessionmaker, the blob store.

Built once per pool child (after the fork, so no DB connection is shared across processes)
and passed explicitly to the job logic, which keeps that logic callable from tests with a
SQLite database and a local store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from app.db.models import utcnow
from app.db.session import make_engine, make_sessionmaker
from app.settings import Settings
from app.storage import BlobStore, store_from_settings


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
    """The production context: a real engine/sessionmaker and the configured blob store."""
    sessions = make_sessionmaker(make_engine(settings.database_url))
    return WorkerContext(settings=settings, sessions=sessions, store=store_from_settings(settings))
