"""Job shapes. The request body is `sec_engine.spec.JobSpec` itself (the engine's contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.db.models import Job, JobEvent, TraceRow
from app.schemas import OutputModel


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    status: str
    phase: str | None
    progress: float
    base_model: str
    dataset_id: str
    spec: dict[str, Any]
    metrics: dict[str, Any]
    targets_met: dict[str, Any]
    error: JobError | None
    attempts: int
    max_attempts: int
    artifact_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def for_new_job(cls, row: dict[str, Any]) -> JobOut:
        """A job about to be inserted, from its row's values (no error, no artifact yet)."""
        return cls(**{name: row[name] for name in _ROW_FIELDS}, error=None, artifact_id=None)

    @classmethod
    def from_job(cls, job: Job, artifact_id: str | None = None) -> JobOut:
        error = (
            JobError(code=job.error_code, message=job.error_message or "")
            if job.error_code
            else None
        )
        return cls(
            id=job.id,
            status=job.status,
            phase=job.phase,
            progress=job.progress,
            base_model=job.base_model,
            dataset_id=job.dataset_id,
            spec=job.spec,
            metrics=job.metrics,
            targets_met=job.targets_met,
            error=error,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            artifact_id=artifact_id,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


# The fields that are a job row's columns by the same name.
_ROW_FIELDS = tuple(name for name in JobOut.model_fields if name not in ("error", "artifact_id"))


class JobEventOut(OutputModel):
    id: int
    kind: str
    message: str
    data: dict[str, Any]
    attempt: int
    created_at: datetime

    @classmethod
    def from_row(cls, event: JobEvent) -> JobEventOut:
        return cls.model_validate(event)


class EventPage(BaseModel):
    """Pass `next_cursor` back as `?after=`; it is the last event id seen (or `after`)."""

    data: list[JobEventOut]
    next_cursor: int
    has_more: bool
    job_status: str


class TraceRowOut(OutputModel):
    step: int
    phase: str
    lambda1: float
    lambda2: float
    loss_task: float | None
    loss_data: float | None
    loss_model: float | None
    val_accuracy: float | None
    sparsity: float | None
    size_mb: float | None
    labels_used: int | None
    observation: dict[str, Any]
    decision: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: TraceRow) -> TraceRowOut:
        return cls.model_validate(row)


class TracePage(BaseModel):
    """Pass `next_cursor` back as `?after_step=`."""

    data: list[TraceRowOut]
    next_cursor: int
    has_more: bool
