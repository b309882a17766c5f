"""The job state machine on both databases: each transition is a conditional UPDATE ...
RETURNING that one writer wins, writes its event, and leaves the row alone when it loses;
and no other module of the service writes a job."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import (
    Artifact,
    ArtifactStatus,
    Dataset,
    Job,
    JobEvent,
    JobStatus,
    Tenant,
    new_id,
)
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.jobs import state_machine as sm
from sec_engine.spec import JobSpec
from tests.conftest import migrate

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def sessions(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    url = request.getfixturevalue(f"{request.param}_url")
    migrate(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def submit(sessions: sessionmaker[Session], max_attempts: int = 3) -> str:
    with unit_of_work(sessions) as s:
        tenant = Tenant(name=new_id("t"))
        s.add(tenant)
        s.flush()
        dataset = Dataset(
            tenant_id=tenant.id, name="d", format="csv", storage_path="/d.csv",
            size_bytes=1, sha256="0" * 64, rows=2, labelled_rows=2,
        )  # fmt: skip
        s.add(dataset)
        s.flush()
        row = sm.new_job(
            tenant.id, JobSpec(dataset=dataset.id), queue="gpu", max_attempts=max_attempts, now=T0
        )
        sm.submit(s, row, {"model": "minilm-l6", "train": {"path": "/d.csv"}})
        return str(row["id"])


def claim(sessions: sessionmaker[Session], job_id: str, worker: str = "host:1") -> sm.Attempt:
    with unit_of_work(sessions) as s:
        claimed = sm.claim(s, job_id, worker, T0, 60)
    assert claimed is not None
    return claimed.attempt


def job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as s:
        return s.get_one(Job, job_id)


def kinds(sessions: sessionmaker[Session], job_id: str) -> list[tuple[int, str]]:
    with sessions() as s:
        rows = s.execute(
            select(JobEvent.attempt, JobEvent.kind)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.id)
        )
        return [(a, k) for a, k in rows]


def test_a_claim_returns_what_the_worker_needs_and_only_one_claim_wins(
    sessions: sessionmaker[Session],
) -> None:
    job_id = submit(sessions)
    with unit_of_work(sessions) as s:
        claimed = sm.claim(s, job_id, "host:1", T0, 60)
    with unit_of_work(sessions) as s:
        assert sm.claim(s, job_id, "host:2", T0, 60) is None
    assert claimed is not None
    assert claimed.attempt == sm.Attempt(job_id, "host:1", 1)
    assert claimed.inputs == {"model": "minilm-l6", "train": {"path": "/d.csv"}}
    assert claimed.spec["dataset"] == job(sessions, job_id).dataset_id
    assert job(sessions, job_id).lease_expires_at == T0 + timedelta(seconds=60)
    assert kinds(sessions, job_id) == [(0, sm.EventKind.QUEUED), (1, sm.EventKind.STARTED)]


def test_cancel_cancels_a_queued_job_and_asks_a_running_one_to_stop(
    sessions: sessionmaker[Session],
) -> None:
    queued, running = submit(sessions), submit(sessions)
    claim(sessions, running)
    for job_id, expected in ((queued, "cancelled"), (running, "cancel_requested")):
        with unit_of_work(sessions) as s:
            row = s.get_one(Job, job_id)
            assert sm.cancel(s, row, T0)
            assert row.status == expected  # the caller's object holds what RETURNING gave
            assert row not in s.dirty
        with unit_of_work(sessions) as s:
            assert not sm.cancel(s, s.get_one(Job, job_id), T0)  # nothing left to cancel
    assert job(sessions, queued).finished_at == T0
    assert job(sessions, running).finished_at is None
    assert kinds(sessions, queued)[-1] == (0, sm.EventKind.CANCELLED)
    assert kinds(sessions, running)[-1] == (1, sm.EventKind.CANCEL_REQUESTED)


def test_worker_writes_need_the_attempt_that_holds_the_job(
    sessions: sessionmaker[Session],
) -> None:
    job_id = submit(sessions)
    attempt = claim(sessions, job_id)
    stale = sm.Attempt(job_id, attempt.worker_id, attempt.number - 1)
    with unit_of_work(sessions) as s:
        assert not sm.renew_lease(s, stale, T0, 60)
        assert not sm.set_progress(s, stale, "teacher", 0.5)
        assert sm.held_status(s, stale) is None
        assert sm.set_progress(s, attempt, "teacher", 1.5)
        assert sm.held_status(s, attempt) is JobStatus.RUNNING
        artifact = Artifact(
            id="art_1", tenant_id=job(sessions, job_id).tenant_id, job_id=job_id,
            status=ArtifactStatus.READY.value, storage_key="k", size_bytes=3, sha256="a" * 64,
        )  # fmt: skip
        assert not sm.succeed(
            s, stale, T0, metrics={}, targets_met={}, message="no", data={}, artifact=artifact
        )
        assert sm.succeed(
            s,
            attempt,
            T0,
            metrics={"m": 1},
            targets_met={},
            message="ok",
            data={},
            artifact=artifact,
        )
    with unit_of_work(sessions) as s:  # finished: a late failure changes nothing
        assert not sm.end(s, attempt, T0, JobStatus.FAILED, "internal_error", "late")
        assert s.scalars(select(Artifact.id)).all() == ["art_1"]
    row = job(sessions, job_id)
    assert (row.status, row.progress, row.metrics, row.error_code) == (
        "succeeded",
        1.0,
        {"m": 1},
        None,
    )
    assert [k for _, k in kinds(sessions, job_id)][-2:] == ["artifact.ready", "job.succeeded"]


def test_the_reaper_requeues_fails_or_cancels_a_job_whose_lease_ran_out(
    sessions: sessionmaker[Session],
) -> None:
    later = T0 + timedelta(minutes=5)
    retried, lost, cancelled = submit(sessions), submit(sessions, max_attempts=1), submit(sessions)
    for job_id in (retried, lost, cancelled):
        claim(sessions, job_id)
    with unit_of_work(sessions) as s:
        sm.cancel(s, s.get_one(Job, cancelled), T0)
    outcomes = {}
    for job_id in (retried, lost, cancelled):
        with unit_of_work(sessions) as s:
            read = s.get_one(Job, job_id)
            outcomes[job_id] = sm.reap_expired(s, read, later)
            assert sm.reap_expired(s, read, later) is None  # the state it read is gone
    assert outcomes == {
        retried: sm.Reaped.REQUEUED,
        lost: sm.Reaped.FAILED,
        cancelled: sm.Reaped.CANCELLED,
    }
    assert (job(sessions, retried).status, job(sessions, retried).enqueued_at) == ("queued", later)
    assert (job(sessions, lost).status, job(sessions, lost).error_code) == ("failed", "worker_lost")
    assert job(sessions, cancelled).status == "cancelled"
    assert kinds(sessions, retried)[-1] == (1, sm.EventKind.REQUEUED)
    assert kinds(sessions, lost)[-1] == (1, sm.EventKind.FAILED)
    assert kinds(sessions, cancelled)[-1] == (1, sm.EventKind.CANCELLED)


def test_a_time_out_fails_only_a_job_held_on_this_host(sessions: sessionmaker[Session]) -> None:
    here, elsewhere = submit(sessions), submit(sessions)
    claim(sessions, here, "host-a:7")
    claim(sessions, elsewhere, "host-b:7")
    with unit_of_work(sessions) as s:
        assert sm.fail_timed_out(s, here, host_prefix="host-a:", now=T0, message="too long")
        assert not sm.fail_timed_out(s, elsewhere, host_prefix="host-a:", now=T0, message="x")
        assert not sm.fail_timed_out(s, here, host_prefix="host-a:", now=T0, message="again")
    assert (job(sessions, here).status, job(sessions, here).error_code) == ("failed", "time_limit")
    assert job(sessions, elsewhere).status == "running"
    assert kinds(sessions, here)[-1] == (1, sm.EventKind.FAILED)


def test_enqueue_bookkeeping_is_conditional_on_the_last_send(
    sessions: sessionmaker[Session],
) -> None:
    job_id = submit(sessions)  # enqueued_at = T0
    later = T0 + timedelta(minutes=6)
    with unit_of_work(sessions) as s:
        assert not sm.mark_unsent(s, job_id, later)  # not the send that failed
        assert sm.mark_unsent(s, job_id, T0)
        assert sm.mark_resent(s, job_id, None, later)
        assert not sm.mark_resent(s, job_id, None, later)  # somebody sent it already
    assert job(sessions, job_id).enqueued_at == later


# What writes a job row or its status: an UPDATE or INSERT of `Job`, a new `Job(...)`, or an
# ORM assignment to a job's status.
_JOB_WRITE = re.compile(r"\b(update|insert)\(Job\)|(?<!class )\bJob\(|\bjob\.status\s*=[^=]")


@pytest.mark.parametrize("package", ["app", "workers", "sec_engine", "sec_client"])
def test_no_module_but_the_state_machine_writes_a_job(package: str) -> None:
    writers = {
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / package).rglob("*.py")
        if _JOB_WRITE.search(path.read_text(encoding="utf-8"))
    }
    assert writers <= {"app/jobs/state_machine.py"}, writers
