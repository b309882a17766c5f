"""The hourly sweep of scratch folders: only idle folders of finished (or unknown) jobs go."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import JobStatus
from app.settings import Settings
from workers.scratch import sweep_finished_job_dirs

pytestmark = pytest.mark.unit


def _job_dir(settings: Settings, name: str, *, age_seconds: float) -> Path:
    folder = settings.work_dir / name
    (folder / "checkpoint" / "teacher").mkdir(parents=True)
    (folder / "checkpoint" / "teacher" / "teacher.safetensors").write_bytes(b"weights")
    stamp = time.time() - age_seconds
    os.utime(folder, (stamp, stamp))
    return folder


def test_sweep_removes_idle_folders_of_ended_jobs_only(
    settings: Settings, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    reaped = make_job(status=JobStatus.FAILED.value)  # worker_lost after max_attempts
    waiting = make_job(status=JobStatus.QUEUED.value)  # re-queued: its checkpoint is needed
    finished_just_now = make_job(status=JobStatus.SUCCEEDED.value)
    folders = {
        "reaped": _job_dir(settings, reaped, age_seconds=7200),
        "waiting": _job_dir(settings, waiting, age_seconds=7200),
        "fresh": _job_dir(settings, finished_just_now, age_seconds=10),
        "orphan": _job_dir(settings, "job_not_in_the_database", age_seconds=7200),
        "not_a_job": _job_dir(settings, "notes", age_seconds=7200),
    }

    removed = sweep_finished_job_dirs(sessions, settings.work_dir, older_than_seconds=3600)

    assert sorted(removed) == sorted([reaped, "job_not_in_the_database"])
    assert {k: p.exists() for k, p in folders.items()} == {
        "reaped": False,
        "waiting": True,
        "fresh": True,
        "orphan": False,
        "not_a_job": True,
    }
    assert sweep_finished_job_dirs(sessions, settings.work_dir, 3600) == []


def test_sweep_without_a_work_dir(settings: Settings, sessions: sessionmaker[Session]) -> None:
    assert sweep_finished_job_dirs(sessions, settings.work_dir / "absent", 3600) == []
