"""How the engine reports to whoever runs it (the Celery task, the CLI, a test).

The engine never imports the service. It calls these four methods; the worker implements them
by writing job events, trace rows and progress to the database, and by reading the job's
cancel flag. Calls are synchronous and must be cheap: the worker batches or throttles writes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Phase(StrEnum):
    PREPARING = "preparing"
    TEACHER = "teacher"
    DATA = "data"
    COMPRESSING = "compressing"
    EVALUATING = "evaluating"
    EXPORTING = "exporting"


@dataclass(frozen=True)
class TraceRow:
    """One Synergy Controller decision, with the observation that caused it.

    `observation` and `decision` are plain JSON-able dicts so they can be stored as they are.
    """

    step: int
    phase: Phase
    lambda1: float
    lambda2: float
    loss_task: float | None = None
    loss_data: float | None = None
    loss_model: float | None = None
    val_accuracy: float | None = None
    sparsity: float | None = None
    size_mb: float | None = None
    labels_used: int | None = None
    observation: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"] = str(self.phase)
        return d


class EngineCallbacks(Protocol):
    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """A typed, human-readable milestone (e.g. kind="teacher.done")."""

    def trace(self, row: TraceRow) -> None:
        """One controller step."""

    def progress(self, phase: Phase, fraction: float) -> None:
        """Overall progress in [0, 1] and the phase the engine is in."""

    def should_cancel(self) -> bool:
        """Polled at checkpoints; True makes the engine raise JobCancelled."""


class NullCallbacks:
    """Callbacks that record nothing: for library use and tests."""

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        return None

    def trace(self, row: TraceRow) -> None:
        return None

    def progress(self, phase: Phase, fraction: float) -> None:
        return None

    def should_cancel(self) -> bool:
        return False
