"""One attempt of one job, from claim to a terminal state. Callable directly (tests do).

    claim (queued -> running; it returns the spec and the inputs resolved at submit)
    -> run the engine under a heartbeat -> archive + store the output
    -> ONE transaction: artifact row `ready` + job `succeeded`

A dry run (`spec.dry_run`) takes the same path up to the engine, runs the engine's dry run
instead (`dry_run`, injected the same way, defaulting to `sec_engine.pipeline.dry_run_job`)
and ends `succeeded` with the plan as its metrics and no artifact.

Every state change goes through `app/jobs/state_machine.py`, and every one after the claim is
conditional on the job still being this worker's attempt, so if the reaper took the job back
(a stalled worker) this attempt's late result changes nothing.
The engine is injected (`engine`), defaulting to `sec_engine.pipeline.run_job`, imported only
here, inside the pool child, so the worker's parent process never loads torch or CUDA.

Inputs and outputs cross machines through the blob store (`workers/staging.py`): the attempt
downloads its datasets and uploaded model into its folder, checked against their sha256, and
uploads its artifact. A store that does not answer (`StoreUnavailable`, after the client's
own retries) queues the job again (`state_machine.retry_later`) rather than fail it.

Resume: the engine saves its teacher phase under `<work_dir>/<job_id>/checkpoint/`, which
outlives a killed attempt (each attempt clears only the `attempt-*` folders of killed ones),
and the worker uploads it to the store when it is saved (`checkpoint_key`). A retry on the
same machine finds the folder; one on another machine fetches it from the store first. Both
go when the job ends (succeeded, failed or cancelled) by this attempt's hand.

TEST ONLY: the reliability tests kill real worker processes dozens of times, which would take
hours with real training. They start workers with `SEC_TEST_ENGINE=module:function` naming a
fast fake engine; it is honoured only when `SEC_ENVIRONMENT=test`, and a worker in any other
environment that finds it set fails the job loudly rather than run something that is not SEC.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import socket
import time
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from app.db.models import Artifact, ArtifactStatus, JobStatus, new_id, utcnow
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.jobs import inputs as job_inputs
from app.jobs import state_machine
from app.jobs.state_machine import Attempt, ClaimedJob
from app.storage import StoreUnavailable, artifact_key, checkpoint_key, delete_quietly
from sec_engine.artifact_contract.files import describe_files
from sec_engine.callbacks import EngineCallbacks, Phase
from sec_engine.errors import EngineError, JobCancelled, SpecError
from sec_engine.result import EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec
from workers.archive import make_archive
from workers.context import WorkerContext
from workers.db_callbacks import DbCallbacks
from workers.heartbeat import Heartbeat
from workers.staging import CheckpointUpload, fetch_checkpoint, stage_inputs

logger = logging.getLogger(__name__)


class EngineFn(Protocol):
    """`sec_engine.pipeline.run_job`'s signature; the fakes in the tests take the same."""

    def __call__(
        self,
        spec: JobSpec,
        inputs: ResolvedInputs,
        out_dir: Path,
        callbacks: EngineCallbacks,
        checkpoint_dir: Path | None = None,
    ) -> EngineResult: ...


class DryRunFn(Protocol):
    """`sec_engine.pipeline.dry_run_job`'s signature: returns `plan` and `warnings`."""

    def __call__(
        self, spec: JobSpec, inputs: ResolvedInputs, callbacks: EngineCallbacks
    ) -> dict[str, Any]: ...


CHECKPOINT_DIR = "checkpoint"  # under work_dir / job_id, shared by the job's attempts

# The manifest entries copied onto the job row's `metrics` (the numbers a user polls for); the
# whole manifest (spec, per-technique details, file checksums) is on the artifact record.
METRIC_KEYS = (
    "teacher",
    "compressed",
    "ratios",
    "labels_used",
    "labels_available",
    "wall_seconds",
    "device",
    "plan",  # predicted (and, for a real job, actual) seconds per phase
    "warnings",  # budget too small, weak teacher, deadline reached
)


class Outcome(StrEnum):
    SKIPPED = "skipped"  # not queued: a duplicate or redelivered message
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"  # the job was taken from this worker (lease expired) before it finished
    REQUEUED = "requeued"  # the blob store did not answer: queued again for a later attempt


# Outcomes after which no attempt of the job will run again, so its checkpoint can go.
_FINAL = frozenset({Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED})


# Names a fake engine (`module:function`) for the reliability tests; see the module docstring.
TEST_ENGINE_ENV = "SEC_TEST_ENGINE"


def _test_engine(environment: str) -> str | None:
    test_engine = os.environ.get(TEST_ENGINE_ENV)
    if test_engine and environment != "test":
        raise RuntimeError(f"{TEST_ENGINE_ENV} is set outside SEC_ENVIRONMENT=test; refusing")
    return test_engine


def default_engine(environment: str) -> EngineFn:
    test_engine = _test_engine(environment)
    if test_engine:
        module, _, name = test_engine.partition(":")
        fake: EngineFn = getattr(importlib.import_module(module), name)
        return fake
    from sec_engine.pipeline import run_job  # heavy (torch): only in the process running a job

    engine: EngineFn = run_job
    return engine


def default_dry_run(environment: str) -> DryRunFn:
    """The real dry run (it trains nothing, so a fake-engine test worker runs it too)."""
    _test_engine(environment)
    from sec_engine.pipeline import dry_run_job  # heavy (torch), as in default_engine

    dry_run: DryRunFn = dry_run_job
    return dry_run


def run_job(
    ctx: WorkerContext,
    job_id: str,
    engine: EngineFn | None = None,
    dry_run: DryRunFn | None = None,
) -> Outcome:
    with unit_of_work(ctx.sessions) as session:
        job = state_machine.claim(
            session, job_id, ctx.worker_id, ctx.clock(), ctx.settings.job_lease_seconds
        )
    if job is None:
        logger.info("job %s is not queued; nothing to do", job_id)
        return Outcome.SKIPPED
    attempt = job.attempt
    job_dir = ctx.settings.work_dir / job_id
    attempt_dir = job_dir / f"attempt-{attempt.number}"
    outcome: Outcome | None = None
    try:
        with Heartbeat(ctx, job_id, attempt.number) as heartbeat:
            callbacks = DbCallbacks(ctx, job_id, attempt.number, lost=heartbeat.lost)
            outcome = _run_claimed(ctx, job, attempt_dir, callbacks, engine, dry_run)
            return outcome
    finally:
        shutil.rmtree(attempt_dir, ignore_errors=True)
        if outcome in _FINAL:
            shutil.rmtree(job_dir / CHECKPOINT_DIR, ignore_errors=True)
            delete_quietly(ctx.store, checkpoint_key(job.tenant_id, job_id))
            with contextlib.suppress(OSError):
                job_dir.rmdir()  # only when nothing else is left in it


def _run_claimed(
    ctx: WorkerContext,
    job: ClaimedJob,
    attempt_dir: Path,
    callbacks: DbCallbacks,
    engine: EngineFn | None,
    dry_run: DryRunFn | None,
) -> Outcome:
    attempt = job.attempt
    try:
        # Everything the attempt needs came back from the claim: no row is read again.
        try:
            spec = JobSpec.model_validate(job.spec)
        except ValidationError as exc:
            raise SpecError(f"the stored job spec is invalid: {exc}") from exc
        stored = job_inputs.parse(job.inputs)
        # Leftovers of earlier attempts of this job whose worker was killed (its `finally`
        # never ran): this attempt owns the job now, and a killed attempt's half-written
        # archive can be gigabytes. The checkpoint next to them is kept: it is what the retry
        # resumes from.
        for leftover in attempt_dir.parent.glob("attempt-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        inputs = stage_inputs(ctx.store, stored, attempt_dir / "inputs", ctx.settings)
        if spec.dry_run:
            plan_run = dry_run or default_dry_run(ctx.settings.environment)
            report = plan_run(spec, inputs, callbacks)
            if callbacks.lost:
                return Outcome.LOST
            return _store_plan(ctx, attempt, report)
        checkpoint_dir = attempt_dir.parent / CHECKPOINT_DIR
        key = checkpoint_key(job.tenant_id, attempt.job_id)
        fetch_checkpoint(ctx.store, key, checkpoint_dir, ctx.settings)
        out_dir = attempt_dir / "out"
        out_dir.mkdir(parents=True)
        run = engine or default_engine(ctx.settings.environment)
        engine_callbacks = CheckpointUpload(callbacks, ctx.store, key, checkpoint_dir)
        result = run(spec, inputs, out_dir, engine_callbacks, checkpoint_dir=checkpoint_dir)
        if callbacks.lost:
            return Outcome.LOST
        callbacks.progress(Phase.EXPORTING, 1.0)
        return _store_result(ctx, job, attempt_dir, result)
    except StoreUnavailable as exc:
        logger.warning("job %s attempt %d: %s", attempt.job_id, attempt.number, exc)
        return _retry_later(
            ctx, attempt, "store_unavailable", f"the blob store is unavailable: {exc}"
        )
    except JobCancelled as exc:
        if callbacks.lost:
            return Outcome.LOST
        return _end(ctx, attempt, JobStatus.CANCELLED, "cancelled", exc.message)
    except EngineError as exc:
        return _end(ctx, attempt, JobStatus.FAILED, exc.code, exc.message)
    except SoftTimeLimitExceeded:
        minutes = ctx.settings.job_hard_limit_minutes
        message = f"the job ran past the worker's time limit ({minutes:g} min)"
        return _end(ctx, attempt, JobStatus.FAILED, "time_limit", message)
    except Exception:
        logger.exception("job %s attempt %d failed unexpectedly", attempt.job_id, attempt.number)
        message = "an internal error stopped the job; the operators have the details in the logs"
        return _end(ctx, attempt, JobStatus.FAILED, "internal_error", message)


def _metrics(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in METRIC_KEYS if k in manifest}


def _store_plan(ctx: WorkerContext, attempt: Attempt, report: dict[str, Any]) -> Outcome:
    """A dry run's end: the plan (and its warnings) as the job's metrics, no artifact."""
    fits = bool(report.get("plan", {}).get("fits"))
    with unit_of_work(ctx.sessions) as session:
        stored = state_machine.succeed(
            session,
            attempt,
            ctx.clock(),
            metrics=_metrics(report),
            targets_met={},
            message="dry run done: the plan is in the job's metrics",
            data={"dry_run": True, "fits": fits},
        )
    if not stored:
        logger.warning("job %s attempt %d planned after losing its lease", *_ids(attempt))
        return Outcome.LOST
    return Outcome.SUCCEEDED


def _store_result(
    ctx: WorkerContext, job: ClaimedJob, attempt_dir: Path, result: EngineResult
) -> Outcome:
    attempt = job.attempt
    files = result.files or describe_files(result.out_dir)
    artifact_id = new_id("art")
    archive = attempt_dir / f"{artifact_id}.tar.gz"
    sha256 = make_archive(result.out_dir, archive, top=attempt.job_id)
    size = archive.stat().st_size
    key = artifact_key(job.tenant_id, attempt.job_id, artifact_id)
    _put_patiently(ctx, key, archive)

    artifact = Artifact(
        id=artifact_id,
        tenant_id=job.tenant_id,
        job_id=attempt.job_id,
        status=ArtifactStatus.READY.value,
        storage_key=key,
        size_bytes=size,
        sha256=sha256,
        files=[asdict(f) for f in files],
        manifest=result.manifest,
    )
    with unit_of_work(ctx.sessions) as session:
        # The artifact row (already `ready`) and the job's `succeeded`: one transaction.
        stored = state_machine.succeed(
            session,
            attempt,
            ctx.clock(),
            metrics=_metrics(result.manifest),
            targets_met=dict(result.targets_met),
            message="job succeeded",
            data={"targets_met": dict(result.targets_met)},
            artifact=artifact,
        )
    if not stored:
        logger.warning("job %s attempt %d finished after losing its lease", *_ids(attempt))
        return Outcome.LOST
    return Outcome.SUCCEEDED


# Waits between the artifact upload's tries, on top of the S3 client's own quick retries: a
# finished result is worth a minute of waiting (the heartbeat keeps the lease) before the
# job is queued again and recomputed.
ARTIFACT_UPLOAD_WAITS = (5.0, 20.0, 40.0)


def _put_patiently(ctx: WorkerContext, key: str, path: Path) -> None:
    for wait in ARTIFACT_UPLOAD_WAITS:
        try:
            ctx.store.put_file(key, path)
            return
        except StoreUnavailable as exc:
            logger.warning("artifact upload failed (%s); trying again in %g s", exc, wait)
            time.sleep(wait)
    ctx.store.put_file(key, path)


def _retry_later(ctx: WorkerContext, attempt: Attempt, code: str, message: str) -> Outcome:
    with unit_of_work(ctx.sessions) as session:
        status = state_machine.retry_later(
            session, attempt, ctx.clock(), code=code, message=message
        )
    if status is None:
        return Outcome.LOST
    return {
        JobStatus.QUEUED: Outcome.REQUEUED,
        JobStatus.FAILED: Outcome.FAILED,
        JobStatus.CANCELLED: Outcome.CANCELLED,
    }[status]


def _end(
    ctx: WorkerContext, attempt: Attempt, status: JobStatus, code: str, message: str
) -> Outcome:
    """Record a failure or a cancellation, if the job is still this attempt's."""
    with unit_of_work(ctx.sessions) as session:
        ended = state_machine.end(session, attempt, ctx.clock(), status, code, message)
    if not ended:
        return Outcome.LOST
    return Outcome.CANCELLED if status is JobStatus.CANCELLED else Outcome.FAILED


def _ids(attempt: Attempt) -> tuple[str, int]:
    return attempt.job_id, attempt.number


def fail_killed_at_hard_limit(database_url: str, job_id: str, minutes: float) -> bool:
    """Called in the worker's MAIN process after the pool killed the job's child at the hard
    time limit: fail the job with `time_limit` now, rather than let its lease run out and the
    reaper retry a job that will only time out again.

    The main process has no database engine of its own (children must not inherit one), so a
    short-lived one is used. Only a job still held by a process of this host is touched.
    """
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            return state_machine.fail_timed_out(
                session,
                job_id,
                host_prefix=f"{socket.gethostname()}:",
                now=utcnow(),
                message=f"the job ran past the worker's hard time limit ({minutes:g} min)"
                " and was stopped",
            )
    finally:
        engine.dispose()
