"""Test doubles of the production interfaces, kept out of the production modules.

- `RecordingJobQueue`: an `app.queue.JobQueue` that remembers what would have been sent.
- `RecordingCallbacks`: `sec_engine.callbacks.EngineCallbacks` kept in memory, to assert on.
"""

from __future__ import annotations

from typing import Any

from sec_engine.callbacks import Phase, TraceRow


class RecordingJobQueue:
    """For unit tests of the API: remembers what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def enqueue(self, job_id: str, queue: str) -> None:
        self.sent.append((job_id, queue))


class RecordingCallbacks:
    """Engine callbacks that keep everything in memory; `cancel_requested` is what
    `should_cancel` answers."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.rows: list[TraceRow] = []
        self.progress_log: list[tuple[Phase, float]] = []
        self.cancel_requested = False

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append((kind, message, data or {}))

    def trace(self, row: TraceRow) -> None:
        self.rows.append(row)

    def progress(self, phase: Phase, fraction: float) -> None:
        self.progress_log.append((phase, fraction))

    def should_cancel(self) -> bool:
        return self.cancel_requested
