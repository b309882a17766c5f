"""Typed shapes of the API's answers (pydantic).

They mirror `app/*/schemas.py` but are written out here, so the client installs and imports
without the service (no SQLAlchemy, no torch). Unknown fields are ignored: a newer server
may add fields without breaking an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Page(ApiModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None
    has_more: bool = False


class Tenant(ApiModel):
    id: str
    name: str


class Dataset(ApiModel):
    id: str
    name: str
    format: str
    size_bytes: int
    sha256: str
    rows: int
    labelled_rows: int
    has_pairs: bool
    summary: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class Model(ApiModel):
    id: str
    kind: Literal["builtin", "uploaded"]
    name: str
    description: str = ""
    architecture: str
    num_parameters: int | None = None
    available: bool


class JobError(ApiModel):
    code: str
    message: str


class Job(ApiModel):
    id: str
    status: str
    phase: str | None = None
    progress: float = 0.0
    base_model: str
    dataset_id: str
    spec: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    targets_met: dict[str, Any] = Field(default_factory=dict)
    error: JobError | None = None
    attempts: int = 0
    max_attempts: int = 0
    artifact_id: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def warnings(self) -> list[str]:
        """What the job warns about (a budget too small for a useful plan, a teacher that did
        not learn, a phase cut short by the wall clock); empty when all went to plan."""
        return [str(w) for w in self.metrics.get("warnings") or []]


class Plan(ApiModel):
    """A job's plan for its device: steps per phase and what they are predicted to take.

    What a dry run answers (`SecClient.plan`), and what a real job planned (`metrics["plan"]`).
    `fits` is False when even the least useful plan (one pass over the labels for teacher and
    student) needs more than the budget: `minimum_minutes` is the budget it needs, and
    `full_minutes` the budget for the spec's own epochs.
    """

    teacher_epochs: float
    student_epochs: float
    teacher_steps: int
    student_steps: int
    predicted_seconds: dict[str, float]
    predicted_minutes: float
    budget_minutes: float
    fits: bool
    minimum_minutes: float
    full_minutes: float
    scale: float | None = None  # 1 = the spec's epochs, 0 = the least useful plan
    throughput: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    actual_seconds: dict[str, float] | None = None  # a real job's, once it ran
    actual_device_seconds: dict[str, float] | None = None  # the same, in the plan's clock
    warnings: list[str] = Field(default_factory=list)  # as a real job would warn
    job_id: str | None = None  # the dry-run job that made it

    @classmethod
    def from_job(cls, job: Job) -> Plan:
        """The plan a (dry-run or finished) job reported; `ValueError` when it has none."""
        plan = job.metrics.get("plan")
        if not isinstance(plan, dict):
            raise ValueError(f"job {job.id} reported no plan (status {job.status})")
        return cls.model_validate({**plan, "warnings": job.warnings, "job_id": job.id})


class JobEvent(ApiModel):
    id: int
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 0
    created_at: datetime


class EventPage(ApiModel):
    data: list[JobEvent]
    next_cursor: int
    has_more: bool
    job_status: str


class TraceRow(ApiModel):
    """One Synergy Controller step: λ1, λ2, the loss parts and the metrics it saw."""

    step: int
    phase: str
    lambda1: float
    lambda2: float
    loss_task: float | None = None
    loss_data: float | None = None
    loss_model: float | None = None
    val_accuracy: float | None = None
    sparsity: float | None = None
    size_mb: float | None = None
    labels_used: int | None = None
    observation: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] = Field(default_factory=dict)


class JobStatusUpdate(ApiModel):
    """A `status` event of the live stream: sent whenever status, phase or progress change."""

    status: str
    phase: str | None = None
    progress: float = 0.0


class StreamEnd(ApiModel):
    """The stream's last message: the job reached a final state."""

    status: str | None = None


StreamItem = JobEvent | JobStatusUpdate | TraceRow | StreamEnd


class Artifact(ApiModel):
    id: str
    job_id: str
    status: str
    size_bytes: int
    sha256: str | None = None
    files: list[Any] = Field(default_factory=list)
    manifest: dict[str, Any] = Field(default_factory=dict)
    download_url: str | None = None
    created_at: datetime


class Deployment(ApiModel):
    id: str
    artifact_id: str
    status: str
    config: dict[str, Any] = Field(default_factory=dict)
    error_message: str | None = None
    created_at: datetime


class Prediction(ApiModel):
    label: str
    probabilities: dict[str, float]


class JobSnapshot(ApiModel):
    """What `wait_for_job` hands its progress callback: the latest of everything it saw."""

    job_id: str
    status: str
    phase: str | None = None
    progress: float = 0.0
    trace: TraceRow | None = None
    event: JobEvent | None = None
