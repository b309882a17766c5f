"""What crosses machines for an attempt (`workers/staging.py`, through `job_runner`): inputs
checked against their sha256, the store being down, the checkpoint's way in and out.

A local store stands in for S3 here (the same `BlobStore` protocol); the real S3 server runs
the same paths in `tests/integration/test_two_machines.py`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Artifact, Job, JobEvent, JobStatus
from app.db.session import unit_of_work
from app.storage import BlobStore, StoreUnavailable, checkpoint_key
from sec_engine.callbacks import EngineCallbacks
from sec_engine.result import EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec
from tests.workers.conftest import FakeEngine
from workers import job_runner, staging
from workers.context import WorkerContext
from workers.job_runner import Outcome, run_job

pytestmark = pytest.mark.unit


class FlakyStore:
    """The context's store, with the named methods failing as an unreachable S3 does."""

    def __init__(self, inner: BlobStore, failing: set[str]) -> None:
        self.inner = inner
        self.failing = failing

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in self.failing:
            return method

        def down(*_args: Any, **_kwargs: Any) -> None:
            raise StoreUnavailable(f"{name}: could not connect to the endpoint URL")

        return down


def _with_store(ctx: WorkerContext, *failing: str) -> WorkerContext:
    return dataclasses.replace(ctx, store=FlakyStore(ctx.store, set(failing)))


def _job(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as s:
        return s.get_one(Job, job_id)


def _events(sessions: sessionmaker[Session], job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with sessions() as s:
        rows = s.execute(
            select(JobEvent.attempt, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.id)
        ).all()
    return [(a, k, d) for a, k, d in rows]


def _train_key(sessions: sessionmaker[Session], job_id: str) -> str:
    inputs = _job(sessions, job_id).inputs
    assert inputs is not None
    return str(inputs["train"]["key"])


class NeverCalled(FakeEngine):
    def __call__(self, *args: Any, **kwargs: Any) -> EngineResult:
        raise AssertionError("the engine ran on inputs that did not check out")


def test_an_input_whose_bytes_changed_fails_the_job_before_the_engine(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    blob = ctx.store.path_for(_train_key(sessions, job_id))
    assert blob is not None
    blob.write_text("text,label\ngood film,neg\nbad film,neg\n")  # same size, other bytes

    assert run_job(ctx, job_id, NeverCalled()) is Outcome.FAILED
    job = _job(sessions, job_id)
    assert job.error_code == "input_corrupt"
    assert "sha256" in (job.error_message or "")
    assert not (ctx.settings.work_dir / job_id).exists()  # nothing unverified left behind


def test_an_input_missing_from_the_store_fails_the_job_with_its_name(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    ctx.store.delete(_train_key(sessions, job_id))

    assert run_job(ctx, job_id, NeverCalled()) is Outcome.FAILED
    job = _job(sessions, job_id)
    assert job.error_code == "input_missing"
    assert "train" in (job.error_message or "")


def test_a_store_that_is_down_queues_the_job_again_until_attempts_run_out(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    """Not the job's fault: queued again (unsent, so the reaper's next sweep sends it), and
    only the last allowed attempt fails, with the reason."""
    job_id = make_job(max_attempts=2)
    down = _with_store(ctx, "get_file")

    assert run_job(down, job_id, NeverCalled()) is Outcome.REQUEUED
    job = _job(sessions, job_id)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.QUEUED, 1, None)
    assert (job.enqueued_at, job.lease_expires_at, job.error_code) == (None, None, None)
    attempt, kind, data = _events(sessions, job_id)[-1]
    assert (attempt, kind, data) == (1, "job.requeued", {"code": "store_unavailable"})

    assert run_job(down, job_id, NeverCalled()) is Outcome.FAILED
    job = _job(sessions, job_id)
    assert (job.status, job.attempts, job.error_code) == (JobStatus.FAILED, 2, "store_unavailable")


def test_the_store_back_up_the_retry_succeeds(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    assert run_job(_with_store(ctx, "get_file"), job_id, NeverCalled()) is Outcome.REQUEUED
    assert run_job(ctx, job_id, FakeEngine()) is Outcome.SUCCEEDED
    assert _job(sessions, job_id).attempts == 2


def test_an_artifact_that_cannot_be_stored_is_never_marked_ready(
    ctx: WorkerContext,
    sessions: sessionmaker[Session],
    make_job: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The upload is tried again after waits; when the store stays down, no artifact row is
    written (a row is `ready` only with its blob stored) and the job is queued again."""
    monkeypatch.setattr(job_runner, "ARTIFACT_UPLOAD_WAITS", (0.0, 0.0))
    tries: list[str] = []

    class CountingPuts(FlakyStore):
        def __getattr__(self, name: str) -> Any:
            if name == "put_file":
                tries.append(name)
            return super().__getattr__(name)

    job_id = make_job()
    down = dataclasses.replace(ctx, store=CountingPuts(ctx.store, {"put_file"}))
    assert run_job(down, job_id, FakeEngine()) is Outcome.REQUEUED
    assert len(tries) == 3  # the first try and one after each wait
    with sessions() as s:
        assert s.scalars(select(Artifact).where(Artifact.job_id == job_id)).all() == []
    assert _job(sessions, job_id).status == JobStatus.QUEUED


class SavesACheckpoint(FakeEngine):
    """Writes a teacher checkpoint folder and reports it, as the engine's teacher phase does;
    records what it found in the folder when it started."""

    def __init__(self) -> None:
        super().__init__()
        self.found: str | None = None

    def __call__(
        self,
        spec: JobSpec,
        inputs: ResolvedInputs,
        out_dir: Path,
        callbacks: EngineCallbacks,
        checkpoint_dir: Path | None = None,
    ) -> EngineResult:
        assert checkpoint_dir is not None
        teacher = checkpoint_dir / "teacher"
        if (teacher / "checkpoint.json").is_file():
            self.found = (teacher / "checkpoint.json").read_text()
        else:
            teacher.mkdir(parents=True)
            (teacher / "teacher.safetensors").write_bytes(b"\x01" * 4096)
            (teacher / "checkpoint.json").write_text('{"fingerprint": "f"}')
            callbacks.event("checkpoint.saved", "teacher checkpoint written", {"size_bytes": 1})
        return super().__call__(spec, inputs, out_dir, callbacks)


def test_the_checkpoint_goes_to_the_store_and_a_retry_elsewhere_gets_it_back(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    job = _job(sessions, job_id)
    key = checkpoint_key(job.tenant_id, job_id)

    class DiesAfterTheCheckpoint(SavesACheckpoint):
        def __call__(self, *args: Any, **kwargs: Any) -> EngineResult:
            super().__call__(*args, **kwargs)
            raise KeyboardInterrupt  # stands for SIGKILL: the job stays `running`

    with pytest.raises(KeyboardInterrupt):
        run_job(ctx, job_id, DiesAfterTheCheckpoint())
    assert ctx.store.exists(key)
    saved = next(d for _, k, d in _events(sessions, job_id) if k == "checkpoint.saved")
    assert saved["stored_bytes"] > 4096  # uploaded before the event was recorded
    # The machine is gone with its disk; the reaper queues the job again.
    shutil.rmtree(ctx.settings.work_dir)
    with unit_of_work(sessions) as s:
        s.get_one(Job, job_id).status = JobStatus.QUEUED.value

    second = SavesACheckpoint()
    assert run_job(ctx, job_id, second) is Outcome.SUCCEEDED
    assert second.found == '{"fingerprint": "f"}'  # fetched from the store before the engine
    assert not ctx.store.exists(key)  # the job ended for good: its checkpoint went


def test_a_checkpoint_the_store_cannot_take_is_reported_and_the_job_goes_on(
    ctx: WorkerContext, sessions: sessionmaker[Session], make_job: Callable[..., str]
) -> None:
    job_id = make_job()
    flaky = _with_store(ctx, "put_file")
    # The artifact still has to be stored: only the checkpoint's upload fails.
    store = flaky.store
    assert isinstance(store, FlakyStore)

    class CheckpointThenRecover(SavesACheckpoint):
        def __call__(self, *args: Any, **kwargs: Any) -> EngineResult:
            result = super().__call__(*args, **kwargs)
            store.failing.clear()
            return result

    assert run_job(flaky, job_id, CheckpointThenRecover()) is Outcome.SUCCEEDED
    kinds = [k for _, k, _ in _events(sessions, job_id)]
    assert kinds.index("checkpoint.upload_failed") < kinds.index("checkpoint.saved")


def test_the_checkpoint_folder_name_is_the_engines() -> None:
    from sec_engine.checkpoint import PHASE_DIR

    assert staging.CHECKPOINT_PHASE_DIR == PHASE_DIR
