"""Reaper transitions, the heartbeat, and the throttled DB callbacks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job, JobEvent, JobStatus
from app.db.models import TraceRow as TraceRowModel
from app.db.session import unit_of_work
from app.jobs import state_machine
from sec_engine.callbacks import Phase, TraceRow
from tests.doubles import RecordingJobQueue
from tests.workers.conftest import T0, Clock
from workers.context import WorkerContext
from workers.db_callbacks import DbCallbacks
from workers.heartbeat import Heartbeat
from workers.reaper import reap

pytestmark = pytest.mark.unit


def _claim(ctx: WorkerContext, job_id: str) -> None:
    with unit_of_work(ctx.sessions) as s:
        assert state_machine.claim(s, job_id, ctx.worker_id, ctx.clock(), 60) is not None


def _job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as s:
        return s.get_one(Job, job_id)


def test_expired_lease_requeues_with_attempts_kept(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    _claim(ctx, job_id)
    queue = RecordingJobQueue()

    assert reap(ctx.sessions, queue, clock()).total() == 0  # lease still valid
    clock.advance(61)
    report = reap(ctx.sessions, queue, clock())

    assert report.requeued == [job_id]
    assert queue.sent == [(job_id, "gpu")]
    job = _job(ctx.sessions, job_id)
    assert (job.status, job.attempts, job.worker_id) == ("queued", 1, None)
    assert job.enqueued_at == clock()
    # Idempotent: a second sweep at the same time changes nothing.
    assert reap(ctx.sessions, queue, clock()).total() == 0
    assert len(queue.sent) == 1


def test_expired_lease_on_last_attempt_fails(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    job_id = make_job(attempts=2, max_attempts=3)
    _claim(ctx, job_id)  # attempt 3 of 3
    clock.advance(120)
    queue = RecordingJobQueue()
    report = reap(ctx.sessions, queue, clock())
    assert report.failed == [job_id]
    assert queue.sent == []
    job = _job(ctx.sessions, job_id)
    assert (job.status, job.error_code) == ("failed", "worker_lost")


def test_expired_lease_with_cancel_requested_cancels(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    _claim(ctx, job_id)
    with unit_of_work(ctx.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.CANCEL_REQUESTED))
    clock.advance(61)
    report = reap(ctx.sessions, RecordingJobQueue(), clock())
    assert report.cancelled == [job_id]
    assert _job(ctx.sessions, job_id).status == "cancelled"


def test_heartbeat_keeps_the_job_from_the_reaper(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    _claim(ctx, job_id)
    beat = Heartbeat(ctx, job_id, attempt=1)
    clock.advance(50)
    beat.beat()
    clock.advance(50)  # 100 s after the claim, 50 s after the last beat
    assert reap(ctx.sessions, RecordingJobQueue(), clock()).total() == 0
    assert not beat.lost.is_set()


def test_heartbeat_notices_a_lost_job(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    _claim(ctx, job_id)
    clock.advance(61)
    reap(ctx.sessions, RecordingJobQueue(), clock())
    beat = Heartbeat(ctx, job_id, attempt=1)
    beat.beat()
    assert beat.lost.is_set()
    callbacks = DbCallbacks(ctx, job_id, 1, lost=beat.lost)
    assert callbacks.should_cancel()


def test_stale_queued_job_is_reenqueued_once(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    job_id = make_job(enqueued_at=T0)  # sent at T0; the message was lost (broker restart)
    queue = RecordingJobQueue()
    assert reap(ctx.sessions, queue, clock()).total() == 0
    clock.advance(6 * 60)
    assert reap(ctx.sessions, queue, clock()).reenqueued == [job_id]
    assert reap(ctx.sessions, queue, clock()).total() == 0
    assert queue.sent == [(job_id, "gpu")]


def test_never_sent_job_is_enqueued_on_the_next_sweep(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    job_id = make_job()  # enqueued_at NULL: the broker was down when the API sent it
    queue = RecordingJobQueue()
    assert reap(ctx.sessions, queue, clock()).reenqueued == [job_id]
    assert reap(ctx.sessions, queue, clock()).total() == 0  # enqueued_at is now set
    assert queue.sent == [(job_id, "gpu")]


def test_callbacks_throttle_progress_and_cancel_reads(
    ctx: WorkerContext, make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    _claim(ctx, job_id)
    t = [0.0]
    cb = DbCallbacks(ctx, job_id, 1, progress_interval=2.0, monotonic=lambda: t[0])

    cb.progress(Phase.TEACHER, 0.1)
    cb.progress(Phase.TEACHER, 0.2)  # throttled: same phase, too soon
    assert _job(ctx.sessions, job_id).progress == pytest.approx(0.1)
    cb.progress(Phase.DATA, 0.3)  # a phase change is always written
    job = _job(ctx.sessions, job_id)
    assert job.phase == "data"
    assert job.progress == pytest.approx(0.3)

    assert not cb.should_cancel()
    with unit_of_work(ctx.sessions) as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.CANCEL_REQUESTED))
    assert not cb.should_cancel()  # not re-read yet
    t[0] += 2.0
    assert cb.should_cancel()

    cb.event("data.augmented", "augmented 10 rows", {"rows": 10})
    with ctx.sessions() as s:
        ev = s.scalars(select(JobEvent).where(JobEvent.kind == "data.augmented")).one()
    assert (ev.attempt, ev.data) == (1, {"rows": 10})


def test_reaper_ignores_a_renewed_lease(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    """The reaper matches the exact lease it read, so a concurrent renewal wins."""
    job_id = make_job()
    _claim(ctx, job_id)
    clock.advance(61)
    with unit_of_work(ctx.sessions) as s:
        job = s.get_one(Job, job_id)
        s.expunge(job)
    with unit_of_work(ctx.sessions) as s:  # the heartbeat lands between read and write
        attempt = state_machine.Attempt(job_id, ctx.worker_id, 1)
        assert state_machine.renew_lease(s, attempt, clock(), 60)
    with unit_of_work(ctx.sessions) as s:
        assert state_machine.reap_expired(s, job, clock()) is None
    assert _job(ctx.sessions, job_id).status == "running"
    assert _job(ctx.sessions, job_id).lease_expires_at == clock() + timedelta(seconds=60)


def test_a_duplicate_trace_step_does_not_fail_the_job(
    ctx: WorkerContext, make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    _claim(ctx, job_id)
    cb = DbCallbacks(ctx, job_id, 1)
    cb.trace(TraceRow(step=1, phase=Phase.TEACHER, lambda1=0.5, lambda2=0.5))
    cb.trace(TraceRow(step=1, phase=Phase.COMPRESSING, lambda1=0.4, lambda2=0.6))
    with ctx.sessions() as s:
        rows = s.scalars(select(TraceRowModel).where(TraceRowModel.job_id == job_id)).all()
    assert [(r.step, r.phase) for r in rows] == [(1, "teacher")]


def test_enqueue_failure_leaves_the_job_for_the_next_sweep(
    ctx: WorkerContext, clock: Clock, make_job: Callable[..., str]
) -> None:
    class DownQueue:
        def enqueue(self, job_id: str, queue: str) -> None:
            raise ConnectionError("broker down")

    first, second = make_job(), make_job()
    report = reap(ctx.sessions, DownQueue(), clock())  # both tried; neither raises out
    assert sorted(report.reenqueued) == sorted([first, second])
    queue = RecordingJobQueue()
    assert sorted(reap(ctx.sessions, queue, clock()).reenqueued) == sorted([first, second])
    assert len(queue.sent) == 2
