"""Fixtures for the worker logic: a migrated SQLite database, a local artifact store, and a
tenant with a dataset and a queued job. The engine is a small fake that writes real files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Dataset, Job, Tenant
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.settings import Settings
from app.storage import dataset_key, store_from_settings
from sec_engine.callbacks import EngineCallbacks, Phase, TraceRow
from sec_engine.errors import JobCancelled
from sec_engine.result import EngineResult, ResolvedInputs
from sec_engine.spec import JobSpec
from tests.conftest import migrate
from workers.context import WorkerContext

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A settable clock, so lease arithmetic is tested without sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        var_dir=tmp_path / "var",
        job_lease_seconds=60,
        job_heartbeat_seconds=1,
    )


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(settings: Settings, sessions: sessionmaker[Session], clock: Clock) -> WorkerContext:
    return WorkerContext(
        settings=settings,
        sessions=sessions,
        store=store_from_settings(settings),
        worker_id="w1",
        clock=clock,
    )


@pytest.fixture
def make_job(sessions: sessionmaker[Session], settings: Settings) -> Callable[..., str]:
    """Create a tenant + dataset file + queued job (with the inputs the API would have
    resolved); returns the job id."""

    def _make(**job_fields: Any) -> str:
        data = settings.uploads_dir / "data.csv"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text("text,label\ngood film,pos\nbad film,neg\n")
        sha256 = hashlib.sha256(data.read_bytes()).hexdigest()
        with unit_of_work(sessions) as s:
            tenant = Tenant(name=f"t-{len(job_fields)}-{id(job_fields)}")
            s.add(tenant)
            s.flush()
            ds = Dataset(
                tenant_id=tenant.id,
                name="d",
                format="csv",
                size_bytes=data.stat().st_size,
                sha256=sha256,
                rows=2,
                labelled_rows=2,
            )
            s.add(ds)
            s.flush()
            ds.storage_key = dataset_key(tenant.id, ds.id, "csv")
            store_from_settings(settings).put_file(ds.storage_key, data)
            spec = JobSpec(dataset=ds.id).model_dump(mode="json")
            # As the API resolves them.
            inputs = {"model": "minilm-l6", "train": {"key": ds.storage_key, "sha256": sha256}}
            job = Job(
                tenant_id=tenant.id,
                dataset_id=ds.id,
                base_model="minilm-l6",
                spec=spec,
                created_at=T0,
                **{"inputs": inputs, **job_fields},
            )
            s.add(job)
            s.flush()
            return job.id

    return _make


class FakeEngine:
    """Stands in for `sec_engine.pipeline.run_job`: writes files, reports through callbacks."""

    def __init__(self, fail_with: Exception | None = None, cancel_at_step: int | None = None):
        self.fail_with = fail_with
        self.cancel_at_step = cancel_at_step
        self.inputs: ResolvedInputs | None = None
        self.train_text = ""

    def __call__(
        self,
        spec: JobSpec,
        inputs: ResolvedInputs,
        out_dir: Path,
        callbacks: EngineCallbacks,
        checkpoint_dir: Path | None = None,
    ) -> EngineResult:
        self.inputs = inputs
        self.train_text = inputs.train_path.read_text()  # staged before the engine starts
        callbacks.event("teacher.started", "fine-tuning the teacher", {"steps": 3})
        for step in range(3):
            callbacks.progress(Phase.TEACHER, step / 3)
            callbacks.trace(TraceRow(step=step, phase=Phase.COMPRESSING, lambda1=0.5, lambda2=0.5))
            if self.cancel_at_step == step and callbacks.should_cancel():
                raise JobCancelled("cancelled at a checkpoint")
        if self.fail_with is not None:
            raise self.fail_with
        (out_dir / "model").mkdir()
        (out_dir / "model" / "model.onnx").write_bytes(b"\x00onnx" * 100)
        manifest = {"spec": spec.model_dump(mode="json"), "compressed": {"accuracy": 0.9}}
        (out_dir / "manifest.json").write_text(json.dumps(manifest))
        return EngineResult(out_dir=out_dir, manifest=manifest, targets_met={"max_size_mb": True})
