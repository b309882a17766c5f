"""A worker inside the test: each job the API enqueues runs at once through the worker's own
logic (`workers.job_runner.run_job`), with a scripted device standing in for the engine's
dry run and no training engine, so the SDK and CLI tests see what a worker writes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings
from app.storage import LocalBlobStore
from sec_engine.callbacks import EngineCallbacks
from sec_engine.planning import Sizes, Throughput, make_plan
from sec_engine.result import EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec
from tests.doubles import RecordingJobQueue
from workers.context import WorkerContext
from workers.job_runner import Outcome, run_job

# The demo's data after the split (800 labelled rows, 100 unlabelled).
SIZES = Sizes(train=640, validation=80, test=80, unlabelled=100)


class InlineWorker:
    """`step_s`: seconds a training step takes on the scripted device (inference rows cost a
    hundredth of it); raise it to make the budget too small. `fail_with`: an engine error the
    dry run raises instead."""

    def __init__(self, settings: Settings, db: sessionmaker[Session]) -> None:
        self.ctx = WorkerContext(
            settings=settings,
            sessions=db,
            store=LocalBlobStore(settings.var_dir / "store"),
            worker_id="inline-worker",
        )
        self.step_s = 0.05
        self.fail_with: Exception | None = None
        self.outcomes: list[Outcome] = []

    def run(self, job_id: str) -> None:
        self.outcomes.append(run_job(self.ctx, job_id, _no_training, self.dry_run))

    def dry_run(
        self, spec: JobSpec, inputs: ResolvedInputs, callbacks: EngineCallbacks
    ) -> dict[str, Any]:
        """The engine's dry run without a model: the plan for the scripted device, announced
        by the pipeline's own `announce_plan`."""
        from sec_engine.pipeline import announce_plan
        from sec_engine.reporting import Reporter

        if self.fail_with is not None:
            raise self.fail_with
        device = Throughput(
            teacher_step_s=self.step_s,
            teacher_infer_row_s=self.step_s / 100,
            student_step_s=self.step_s,
            student_infer_row_s=self.step_s / 200,
            calibration_s=20.0,
        )
        plan = make_plan(spec, SIZES, device)
        with tempfile.TemporaryDirectory() as tmp:
            warnings = announce_plan(Reporter(callbacks, Path(tmp)), plan)
        return {"plan": plan.to_dict(), "warnings": warnings}


def _no_training(*args: Any, **kwargs: Any) -> EngineResult:
    raise AssertionError("these tests run dry runs only")


@pytest.fixture
def inline_worker(
    job_queue: RecordingJobQueue,
    settings: Settings,
    db: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> InlineWorker:
    """Jobs submitted through the API run to their end before the submit returns."""
    worker = InlineWorker(settings, db)
    record = job_queue.enqueue

    def enqueue(job_id: str, queue: str) -> None:
        record(job_id, queue)
        worker.run(job_id)

    monkeypatch.setattr(job_queue, "enqueue", enqueue)
    return worker
