"""Clearing the worker's scratch space of jobs that have ended.

A job's folder (`<work_dir>/<job_id>/`: attempt folders and the teacher checkpoint) is removed
by the attempt that ends the job. Two endings never reach that code: the reaper failing a job
whose attempts are used up (`worker_lost`), and a pool kill at the hard time limit. Their
folders, checkpoints included (hundreds of MB for a real teacher), are removed here once the
job is terminal in the database and the folder has been untouched for a while.

Scratch space is local to each worker machine: this sweeps the folder of the worker that runs
it, which is every job's folder in the embedded shape. A multi-machine deployment runs it on
each worker (the beat entry reaches one; `python -m workers.scratch` does the rest).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job, JobStatus

logger = logging.getLogger(__name__)


def sweep_finished_job_dirs(
    sessions: sessionmaker[Session], work_dir: Path, older_than_seconds: float
) -> list[str]:
    """Remove the folders of jobs that are terminal (or unknown) and idle; their ids."""
    if not work_dir.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    idle = {
        p.name: p
        for p in work_dir.iterdir()
        # Only job folders (named by job id): anything else someone put here is left alone.
        if p.name.startswith("job_") and p.is_dir() and p.stat().st_mtime < cutoff
    }
    if not idle:
        return []
    with sessions() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(list(idle))))
        statuses = {row.id: row.status for row in rows}
    removed = []
    for job_id, path in sorted(idle.items()):
        status = statuses.get(job_id)
        # A folder whose job is not in the database is an orphan (e.g. a wiped database).
        if status is None or JobStatus(status).terminal:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(job_id)
    if removed:
        logger.info("removed the scratch folders of %d finished job(s)", len(removed))
    return removed


def main() -> int:
    from app.db.session import make_engine, make_sessionmaker
    from app.settings import get_settings

    settings = get_settings()
    sessions = make_sessionmaker(make_engine(settings.database_url))
    removed = sweep_finished_job_dirs(
        sessions, settings.work_dir, settings.partial_write_max_age_seconds
    )
    print(f"removed {len(removed)} finished job folder(s) from {settings.work_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
