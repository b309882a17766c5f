"""What the chaos tests share: a stack (Postgres + a Redis broker + the API in-process), real
workers running the fake engine, a reaper thread standing in for beat, and job-state reads.

Time is compressed, not faked: leases are 5 s with a 1 s heartbeat, and the reaper sweeps
every 0.5 s (production: 120 s, 20 s and 60 s). Every fault is a real one: SIGKILL of a real
worker process, a real Redis server stopped and restarted, a real redelivery by Redis.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Artifact, Job, JobEvent, JobStatus, TraceRow, utcnow
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from app.queue import CeleryJobQueue
from app.settings import Settings
from tests.conftest import migrate
from tests.integration.flow import celery_worker, create_key
from workers.reaper import reap

FAKE_ENGINE = {"SEC_TEST_ENGINE": "tests.reliability.fake_engine:run"}
TERMINAL = {s.value for s in JobStatus if s.terminal}
CSV = b"text,label\ngreat film,pos\nawful plot,neg\nlovely acting,pos\ndull story,neg\n"


def trials(env_name: str, default: int) -> int:
    """Trial counts: small in `make test`, the full count from `make chaos` (env variables)."""
    return int(os.environ.get(env_name, default))


def figure(name: str, **values: Any) -> None:
    """One line of figures for docs/RELIABILITY.md (`pytest -s` shows it)."""
    print(f"\nFIGURE {name}: " + " ".join(f"{k}={v}" for k, v in values.items()), flush=True)


def chaos_settings(tmp_path: Path, database_url: str, broker_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "var_dir": tmp_path / "var",
        "database_url": database_url,
        "broker_url": broker_url,
        "job_lease_seconds": 5,
        "job_heartbeat_seconds": 1,
        "max_concurrent_jobs_per_tenant": 1000,
        "job_max_attempts": 3,
    }
    values.update(extra)
    return Settings(**values)


@dataclass
class Stack:
    settings: Settings
    client: TestClient
    sessions: sessionmaker[Session]
    headers: dict[str, str]
    dataset_id: str
    tmp_path: Path
    logs: list[Path] = field(default_factory=list)

    def submit(self) -> str:
        r = self.client.post(
            "/v1/jobs",
            headers={**self.headers, "Idempotency-Key": uuid.uuid4().hex},
            json={"dataset": self.dataset_id},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def job(self, job_id: str) -> Job:
        with self.sessions() as s:
            job = s.get_one(Job, job_id)
            s.expunge(job)
            return job

    def trace_steps(self, job_id: str) -> list[int]:
        with self.sessions() as s:
            return list(
                s.scalars(select(TraceRow.step).where(TraceRow.job_id == job_id).order_by("step"))
            )

    def count(self, model: type[Any], job_id: str, **where: Any) -> int:
        with self.sessions() as s:
            q = select(func.count()).select_from(model).where(model.job_id == job_id)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return int(s.scalar(q) or 0)

    def started_events(self, job_id: str) -> int:
        return self.count(JobEvent, job_id, kind="job.started")

    def artifacts(self, job_id: str) -> list[Artifact]:
        with self.sessions() as s:
            rows = list(s.scalars(select(Artifact).where(Artifact.job_id == job_id)))
            for r in rows:
                s.expunge(r)
            return rows

    def wait(self, job_id: str, pred: Any, timeout: float, what: str) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if pred(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never {what}: {job.status}\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_terminal(self, job_id: str, timeout: float = 90) -> Job | None:
        """The job once it is finished, or None if it is still not finished at the deadline."""
        try:
            return self.wait(job_id, lambda j: j.status in TERMINAL, timeout, "finished")
        except AssertionError:
            return None

    def wait_mid_engine(self, job_id: str, timeout: float = 60) -> Job:
        """The job once the fake engine is running (claimed and past its first trace row)."""
        return self.wait(
            job_id,
            lambda j: j.status == JobStatus.RUNNING and bool(self.trace_steps(job_id)),
            timeout,
            "reached the engine",
        )

    def stale_running(self) -> int:
        """Jobs `running` whose lease ran out: what the reaper must never leave behind."""
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < utcnow())
                )
                or 0
            )

    @contextmanager
    def worker(self, name: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
        log = self.tmp_path / f"{name}.log"
        self.logs.append(log)
        with celery_worker(self.settings, log, {**FAKE_ENGINE, **env}) as proc:
            yield proc

    def log_tail(self, n: int = 40) -> str:
        out = []
        for log in self.logs:
            if log.exists():
                out.append(f"--- {log.name}")
                out.extend(log.read_text(errors="replace").splitlines()[-n:])
        return "\n".join(out)

    def deliveries(self) -> int:
        """Messages the workers received (Celery logs one line per delivery)."""
        return sum(
            log.read_text(errors="replace").count("] received") for log in self.logs if log.exists()
        )


@contextmanager
def stack(tmp_path: Path, settings: Settings) -> Iterator[Stack]:
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with TestClient(create_app(settings)) as client:
            headers = {"Authorization": f"Bearer {create_key(settings, 'chaos')}"}
            r = client.post(
                "/v1/datasets", headers=headers, files={"file": ("d.csv", CSV, "text/csv")}
            )
            assert r.status_code == 201, r.text
            yield Stack(
                settings, client, make_sessionmaker(engine), headers, r.json()["id"], tmp_path
            )
    finally:
        engine.dispose()


@contextmanager
def reaper_thread(
    settings: Settings, interval: float = 0.5, stale_after: float = 60.0
) -> Iterator[list[int]]:
    """Run the real reaper every `interval` seconds (what beat does every minute in production).

    Yields a one-item list counting sweeps that raised (a broker outage makes enqueue fail)."""
    stop = threading.Event()
    errors = [0]
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    queue = CeleryJobQueue(settings.broker_url)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                reap(sessions, queue, utcnow(), stale_after=timedelta(seconds=stale_after))
            except Exception:
                errors[0] += 1

    thread = threading.Thread(target=loop, name="test-reaper", daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        stop.set()
        thread.join(timeout=30)
        queue.close()
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, on its own port, that the test may stop and restart
    (never the machine's shared Redis on 6379). No persistence: a restart loses every message,
    the worst case for the broker."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kill_child(job: Job) -> int:
    """SIGKILL the pool child that holds `job` (its pid is in the lease holder's id)."""
    pid = int(str(job.worker_id).rsplit(":", 1)[1])
    os.kill(pid, 9)
    return pid
