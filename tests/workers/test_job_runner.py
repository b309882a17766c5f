"""The job task's logic, called directly with a fake engine on a migrated SQLite database."""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Artifact, Job, JobEvent, JobStatus, TraceRow
from app.db.session import unit_of_work
from app.jobs import state_machine
from sec_engine.errors import DatasetError
from sec_engine.result import ResolvedInputs
from sec_engine.spec import JobSpec
from tests.sec_engine.conftest import make_tiny_bert, write_sentiment_csv
from tests.workers.conftest import FakeEngine
from workers.context import WorkerContext
from workers.job_runner import Outcome, run_job

pytestmark = pytest.mark.unit


def _job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as s:
        return s.get_one(Job, job_id)


def _events(sessions: sessionmaker[Session], job_id: str) -> list[str]:
    with sessions() as s:
        return list(
            s.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        )


def test_success_writes_events_trace_artifact(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    engine = FakeEngine()

    assert run_job(ctx, job_id, engine) is Outcome.SUCCEEDED

    job = _job(sessions, job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 1
    assert job.progress == 1.0
    assert job.metrics == {"compressed": {"accuracy": 0.9}}  # the spec stays on the artifact
    assert job.targets_met == {"max_size_mb": True}
    assert job.lease_expires_at is None
    assert job.finished_at is not None
    assert engine.inputs is not None
    assert engine.inputs.model == "minilm-l6"
    assert engine.train_text.startswith("text,label\n")
    assert not engine.inputs.train_path.exists()  # the attempt's folder went with it
    assert _events(sessions, job_id) == [
        "job.started",
        "teacher.started",
        "artifact.ready",
        "job.succeeded",
    ]
    with sessions() as s:
        steps = list(s.scalars(select(TraceRow.step).where(TraceRow.job_id == job_id)))
        artifact = s.scalars(select(Artifact).where(Artifact.job_id == job_id)).one()
    assert sorted(steps) == [0, 1, 2]
    assert artifact.status == "ready"
    assert artifact.storage_key == f"{job.tenant_id}/{job_id}/{artifact.id}.tar.gz"
    stored = ctx.settings.var_dir / "store" / artifact.storage_key
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == artifact.sha256
    assert artifact.size_bytes == stored.stat().st_size
    assert {f["path"] for f in artifact.files} == {"manifest.json", "model/model.onnx"}
    with tarfile.open(stored) as tar:
        assert sorted(tar.getnames()) == [f"{job_id}/manifest.json", f"{job_id}/model/model.onnx"]
    # The scratch folder is cleaned up.
    assert not (ctx.settings.work_dir / job_id / "attempt-1").exists()


def test_second_delivery_does_nothing(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    assert run_job(ctx, job_id, FakeEngine()) is Outcome.SUCCEEDED
    engine = FakeEngine()
    assert run_job(ctx, job_id, engine) is Outcome.SKIPPED
    assert engine.inputs is None  # the engine never ran
    assert _job(sessions, job_id).attempts == 1


def test_claim_is_conditional(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    with unit_of_work(sessions) as s:
        claimed = state_machine.claim(s, job_id, "w1", ctx.clock(), 60)
    with unit_of_work(sessions) as s:
        assert state_machine.claim(s, job_id, "w2", ctx.clock(), 60) is None
    job = _job(sessions, job_id)
    assert (job.status, job.worker_id, job.attempts) == ("running", "w1", 1)
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > ctx.clock()
    # The claim's RETURNING is all the worker needs of the row.
    assert claimed is not None
    assert claimed.attempt == state_machine.Attempt(job_id, "w1", 1)
    assert (claimed.max_attempts, claimed.tenant_id) == (job.max_attempts, job.tenant_id)
    assert (claimed.spec, claimed.inputs) == (job.spec, job.inputs)


def test_engine_error_fails_with_its_code(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    outcome = run_job(ctx, job_id, FakeEngine(fail_with=DatasetError("row 3 has no text")))
    assert outcome is Outcome.FAILED
    job = _job(sessions, job_id)
    assert (job.status, job.error_code, job.error_message) == (
        "failed",
        "invalid_dataset",
        "row 3 has no text",
    )
    assert _events(sessions, job_id)[-1] == "job.failed"
    with sessions() as s:
        assert s.scalars(select(Artifact)).first() is None


def test_unexpected_error_is_internal_and_safe(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    secret = "/secret/path/in/traceback"
    assert run_job(ctx, job_id, FakeEngine(fail_with=RuntimeError(secret))) is Outcome.FAILED
    job = _job(sessions, job_id)
    assert job.error_code == "internal_error"
    assert job.error_message is not None
    assert secret not in job.error_message


def test_the_engine_gets_the_inputs_resolved_at_submit_and_no_row_is_read_again(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    """The claim returns the job's spec and stored inputs: after it the worker reads neither
    the job's row nor any dataset or model row (the API checked the references once)."""
    job_id = make_job()
    with sessions() as s:
        stored = s.get_one(Job, job_id).inputs
    assert stored is not None
    # An upload from before the blob store: a path on this machine, used as it is.
    validation = str(ctx.settings.uploads_dir / "val.csv")
    with unit_of_work(sessions) as s:
        s.get_one(Job, job_id).inputs = {**stored, "validation": {"path": validation}}
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    bind = sessions.kw["bind"]
    event.listen(bind, "before_cursor_execute", record)
    try:
        engine = FakeEngine()
        assert run_job(ctx, job_id, engine) is Outcome.SUCCEEDED
    finally:
        event.remove(bind, "before_cursor_execute", record)
    # The training set was downloaded from the store into the attempt's folder.
    attempt_inputs = ctx.settings.work_dir / job_id / "attempt-1" / "inputs"
    assert engine.inputs == ResolvedInputs(
        model="minilm-l6", train_path=attempt_inputs / "train.csv", validation_path=Path(validation)
    )
    assert any(s.lstrip().startswith("UPDATE jobs") for s in statements)  # recorded: the claim
    reads = [s for s in statements if re.search(r"\bFROM (jobs|datasets|models)\b", s)]
    assert [s for s in reads if not s.lstrip().upper().startswith(("UPDATE", "DELETE"))] == []


def test_a_job_without_stored_inputs_fails_before_the_engine(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job(inputs=None)  # written around the API
    engine = FakeEngine()
    assert run_job(ctx, job_id, engine) is Outcome.FAILED
    assert engine.inputs is None
    job = _job(sessions, job_id)
    assert job.error_code == "invalid_spec"
    assert "resolved inputs" in (job.error_message or "")


def test_cancel_request_cancels(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()

    class CancelDuringRun(FakeEngine):
        def __call__(self, spec, inputs, out_dir, callbacks, checkpoint_dir=None):
            with unit_of_work(sessions) as s:  # what POST /v1/jobs/{id}/cancel does
                s.execute(
                    update(Job).where(Job.id == job_id).values(status=JobStatus.CANCEL_REQUESTED)
                )
            return super().__call__(spec, inputs, out_dir, callbacks)

    assert run_job(ctx, job_id, CancelDuringRun(cancel_at_step=0)) is Outcome.CANCELLED
    job = _job(sessions, job_id)
    assert job.status == "cancelled"
    assert job.error_code is None
    assert _events(sessions, job_id)[-1] == "job.cancelled"


def test_result_of_a_reaped_attempt_is_dropped(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    """If the reaper gave the job to someone else, a late finish must not overwrite it."""
    job_id = make_job()

    class StolenDuringRun(FakeEngine):
        def __call__(self, spec, inputs, out_dir, callbacks, checkpoint_dir=None):
            with unit_of_work(sessions) as s:
                s.execute(
                    update(Job).where(Job.id == job_id).values(status="queued", worker_id=None)
                )
            return super().__call__(spec, inputs, out_dir, callbacks)

    assert run_job(ctx, job_id, StolenDuringRun()) is Outcome.LOST
    job = _job(sessions, job_id)
    assert job.status == "queued"
    with sessions() as s:
        assert s.scalars(select(Artifact)).first() is None


def test_retry_starts_a_fresh_trace(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    with unit_of_work(sessions) as s:  # a first attempt that died after writing its trace
        s.add(TraceRow(job_id=job_id, step=0, phase="compressing", lambda1=1.0, lambda2=1.0))
        s.execute(update(Job).where(Job.id == job_id).values(attempts=1))
    assert run_job(ctx, job_id, FakeEngine()) is Outcome.SUCCEEDED
    job = _job(sessions, job_id)
    assert job.attempts == 2
    with sessions() as s:
        rows = s.scalars(select(TraceRow).where(TraceRow.job_id == job_id)).all()
    assert [r.lambda1 for r in rows] == [0.5, 0.5, 0.5]


class _Killed(BaseException):
    """Stands for SIGKILL: nothing in the worker catches it, so the job stays `running`."""


def _requeue(sessions: sessionmaker[Session], job_id: str) -> None:
    """What the reaper does once the killed attempt's lease has run out."""
    with unit_of_work(sessions) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.QUEUED, worker_id=None, lease_expires_at=None)
        )


def test_retry_resumes_from_the_teacher_checkpoint(
    ctx: WorkerContext,
    sessions: sessionmaker[Session],
    make_job: Callable[..., str],
    tmp_path: Path,
) -> None:
    """The real engine on a tiny BERT: attempt 1 dies right after saving the teacher phase,
    attempt 2 resumes from it instead of training the teacher; the checkpoint goes at the end."""
    from sec_engine.pipeline import run_job as engine_run_job

    model = make_tiny_bert(tmp_path / "tiny-bert")
    data = write_sentiment_csv(tmp_path / "train.csv", 80, unlabelled=20)
    off = {"enabled": False}
    spec = JobSpec.model_validate(
        {
            "dataset": str(data),
            "budget": {"label_budget": 0.7},
            "training": {
                "batch_size": 16,
                "max_seq_len": 32,
                "teacher_epochs": 1,
                "student_epochs": 1,
                "eval_every_steps": 8,
            },
            "targets": {"latency_batch_size": 2, "latency_seq_len": 16},
            "techniques": {"ada": off, "tal": {"rounds": 1}, "aip": off, "sqd": off},
        }
    )
    seen: list[Path] = []

    class Engine:
        """The real engine on the tiny model; dies after `checkpoint.saved` when `die`."""

        def __init__(self, die: bool) -> None:
            self.die = die

        def __call__(self, _spec, _inputs, out_dir, callbacks, *, checkpoint_dir):
            seen.append(checkpoint_dir)
            die = self.die

            class Dying:
                def __getattr__(self, name):
                    return getattr(callbacks, name)

                def event(self, kind, message, data=None):
                    callbacks.event(kind, message, data)
                    if die and kind == "checkpoint.saved":
                        (out_dir / "half-written.bin").write_bytes(b"\0" * 1024)
                        raise _Killed

            inputs = ResolvedInputs(model=str(model), train_path=data)
            return engine_run_job(spec, inputs, out_dir, Dying(), checkpoint_dir=checkpoint_dir)

    job_id = make_job()
    job_dir = ctx.settings.work_dir / job_id
    with pytest.raises(_Killed):
        run_job(ctx, job_id, Engine(die=True))
    assert (job_dir / "checkpoint" / "teacher" / "checkpoint.json").is_file()
    # A real kill runs no `finally`: leave what it would have left.
    (job_dir / "attempt-1" / "out").mkdir(parents=True)
    assert _job(sessions, job_id).status == JobStatus.RUNNING
    _requeue(sessions, job_id)

    assert run_job(ctx, job_id, Engine(die=False)) is Outcome.SUCCEEDED
    assert seen == [job_dir / "checkpoint"] * 2
    with sessions() as s:
        events = s.execute(
            select(JobEvent.attempt, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.id)
        ).all()
    by_attempt = {a: [k for b, k, _ in events if b == a] for a in (1, 2)}
    assert "checkpoint.saved" in by_attempt[1]
    assert "checkpoint.resumed" in by_attempt[2]
    assert "tal.round" in by_attempt[1]
    assert "tal.round" not in by_attempt[2]  # the teacher was not trained again
    assert not any(k in ("checkpoint.saved", "checkpoint.ignored") for k in by_attempt[2])
    job = _job(sessions, job_id)
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    assert job.metrics["labels_used"] == next(
        d["labels_used"] for a, k, d in events if a == 1 and k == "teacher.done"
    )
    with sessions() as s:  # the trace of the result's attempt still holds the TAL rounds
        phases = list(s.scalars(select(TraceRow.phase).where(TraceRow.job_id == job_id)))
    assert phases.count("teacher") == 2
    assert not job_dir.exists()  # the checkpoint and the killed attempt's leftovers are gone


@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_checkpoint_is_removed_when_the_job_ends(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str], end: str
) -> None:
    job_id = make_job()
    checkpoint = ctx.settings.work_dir / job_id / "checkpoint"

    class Ends(FakeEngine):
        def __call__(self, spec, inputs, out_dir, callbacks, checkpoint_dir=None):
            assert checkpoint_dir == checkpoint
            assert (checkpoint / "teacher" / "kept").is_file()  # a killed attempt's, kept
            if end == "cancelled":
                with unit_of_work(sessions) as s:
                    s.execute(
                        update(Job)
                        .where(Job.id == job_id)
                        .values(status=JobStatus.CANCEL_REQUESTED)
                    )
            return super().__call__(spec, inputs, out_dir, callbacks)

    (checkpoint / "teacher").mkdir(parents=True)
    (checkpoint / "teacher" / "kept").write_text("x")
    engine = Ends(fail_with=DatasetError("bad row")) if end == "failed" else Ends(cancel_at_step=0)
    assert run_job(ctx, job_id, engine).value == end
    assert not checkpoint.exists()


def test_checkpoint_is_kept_when_the_attempt_lost_the_job(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    """A reaped attempt's job runs again elsewhere or here: its checkpoint must stay."""
    job_id = make_job()
    checkpoint = ctx.settings.work_dir / job_id / "checkpoint"

    class Stolen(FakeEngine):
        def __call__(self, spec, inputs, out_dir, callbacks, checkpoint_dir=None):
            assert checkpoint_dir is not None
            (checkpoint_dir / "teacher").mkdir(parents=True)
            _requeue(sessions, job_id)
            return super().__call__(spec, inputs, out_dir, callbacks)

    assert run_job(ctx, job_id, Stolen()) is Outcome.LOST
    assert (checkpoint / "teacher").is_dir()


def _make_dry_run_job(sessions: sessionmaker[Session], make_job: Callable[..., str]) -> str:
    job_id = make_job()
    with unit_of_work(sessions) as s:
        job = s.get_one(Job, job_id)
        job.spec = {**job.spec, "dry_run": True}
    return job_id


def test_dry_run_ends_succeeded_with_the_plan_and_no_artifact(
    ctx: WorkerContext,
    sessions: sessionmaker[Session],
    make_job: Callable[..., str],
    tmp_path: Path,
) -> None:
    """The engine's real dry run on a tiny BERT, on a scripted device too slow for the budget:
    the plan and its warning reach the job row and its events; nothing is trained or stored."""
    from sec_engine.pipeline import dry_run_job
    from sec_engine.planning import Throughput

    slow = Throughput(  # minutes a step: no useful plan fits the default 30 min
        teacher_step_s=250.0,
        teacher_infer_row_s=2.5,
        student_step_s=250.0,
        student_infer_row_s=1.25,
    )

    model = make_tiny_bert(tmp_path / "tiny-bert")
    data = write_sentiment_csv(tmp_path / "train.csv", 80)
    job_id = _make_dry_run_job(sessions, make_job)
    seen: list[JobSpec] = []

    def planner(spec, inputs, callbacks):
        seen.append(spec)
        assert inputs.train_path.is_file()  # the job's own inputs, resolved as for a real run
        tiny = ResolvedInputs(model=str(model), train_path=data)
        return dry_run_job(spec, tiny, callbacks, throughput=slow)

    engine = FakeEngine()
    assert run_job(ctx, job_id, engine, planner) is Outcome.SUCCEEDED
    assert engine.inputs is None  # the training engine never ran
    assert [s.dry_run for s in seen] == [True]

    job = _job(sessions, job_id)
    assert (job.status, job.progress, job.phase) == (JobStatus.SUCCEEDED, 1.0, None)
    assert set(job.metrics) == {"plan", "warnings"}
    plan = job.metrics["plan"]
    assert plan["fits"] is False
    assert plan["minimum_minutes"] > plan["budget_minutes"] == 30.0
    assert plan["teacher_steps"] > 0
    assert plan["student_steps"] > 0
    assert [w.startswith("budget too small") for w in job.metrics["warnings"]] == [True]
    assert job.targets_met == {}
    kinds = _events(sessions, job_id)
    assert kinds[0] == "job.started"
    assert kinds.index("model.loaded") < kinds.index("plan") < kinds.index("budget.too_small")
    assert kinds[-1] == "job.succeeded"
    assert "artifact.ready" not in kinds
    assert "teacher.done" not in kinds
    with sessions() as s:
        assert s.scalars(select(Artifact)).first() is None
        plan_data = s.scalars(
            select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.kind == "plan")
        ).one()
    assert plan_data["teacher_steps"] == plan["teacher_steps"]
    assert not (ctx.settings.work_dir / job_id).exists()


def test_dry_run_with_a_fake_planner_that_fits(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = _make_dry_run_job(sessions, make_job)

    def planner(spec, inputs, callbacks):
        callbacks.event("plan", "plan: teacher 3 steps", {"fits": True})
        return {"plan": {"fits": True, "predicted_minutes": 1.5}, "warnings": [], "other": 1}

    assert run_job(ctx, job_id, FakeEngine(), planner) is Outcome.SUCCEEDED
    job = _job(sessions, job_id)
    assert job.metrics == {"plan": {"fits": True, "predicted_minutes": 1.5}, "warnings": []}
    assert _events(sessions, job_id) == ["job.started", "plan", "job.succeeded"]


def test_a_real_jobs_plan_and_warnings_reach_its_metrics(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()

    class Planned(FakeEngine):
        def __call__(self, spec, inputs, out_dir, callbacks, checkpoint_dir=None):
            result = super().__call__(spec, inputs, out_dir, callbacks)
            result.manifest.update(plan={"fits": True}, warnings=["the teacher did not learn"])
            return result

    def planner(spec, inputs, callbacks):
        raise AssertionError("a real job must not dry-run")

    assert run_job(ctx, job_id, Planned(), planner) is Outcome.SUCCEEDED
    job = _job(sessions, job_id)
    assert job.metrics["plan"] == {"fits": True}
    assert job.metrics["warnings"] == ["the teacher did not learn"]
