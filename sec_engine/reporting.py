"""The engine's side of the callbacks: phases mapped to overall progress, cancellation checks,
and a copy of every trace row and event in the artifact directory (trace.jsonl, events.jsonl),
so the CLI and the service produce the same files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

# Re-exported: the pipeline names these files in the manifest from here.
from sec_engine.artifact_contract.layout import EVENTS_NAME as EVENTS_NAME
from sec_engine.artifact_contract.layout import TRACE_NAME as TRACE_NAME
from sec_engine.callbacks import EngineCallbacks, Phase, TraceRow
from sec_engine.errors import JobCancelled

# Share of overall progress each phase spans, in pipeline order.
_PHASE_SPANS: dict[Phase, tuple[float, float]] = {
    Phase.PREPARING: (0.0, 0.05),
    Phase.TEACHER: (0.05, 0.40),
    Phase.DATA: (0.40, 0.50),
    Phase.COMPRESSING: (0.50, 0.85),
    Phase.EVALUATING: (0.85, 0.95),
    Phase.EXPORTING: (0.95, 1.0),
}


class Reporter:
    def __init__(self, callbacks: EngineCallbacks, out_dir: Path) -> None:
        self.callbacks = callbacks
        self.trace_path = out_dir / TRACE_NAME
        self.events_path = out_dir / EVENTS_NAME
        self.trace_path.write_text("", encoding="utf-8")
        self.events_path.write_text("", encoding="utf-8")
        self.rows: list[TraceRow] = []
        self.phase = Phase.PREPARING
        # Stages count steps from 0 in their own phase (TAL rounds, compression steps); the
        # job-wide step adds an offset per phase so trace steps are unique and increasing
        # across the whole job (the service stores them keyed by (job, step)).
        self._step_offset = 0
        self._next_step = 0

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        with self.events_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "message": message, "data": data or {}}) + "\n")
        self.callbacks.event(kind, message, data)

    def trace(self, row: TraceRow) -> None:
        step = max(self._step_offset + row.step, self._next_step)
        self._next_step = step + 1
        row = dataclasses.replace(
            row, step=step, observation={**row.observation, "phase_step": row.step}
        )
        self.rows.append(row)
        with self.trace_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row.to_dict()) + "\n")
        self.callbacks.trace(row)

    def enter(self, phase: Phase) -> None:
        self.checkpoint()
        self.phase = phase
        self._step_offset = self._next_step
        self.progress(0.0)

    def progress(self, within_phase: float) -> None:
        lo, hi = _PHASE_SPANS[self.phase]
        frac = lo + (hi - lo) * min(1.0, max(0.0, within_phase))
        self.callbacks.progress(self.phase, round(frac, 4))

    def checkpoint(self) -> None:
        """Raise JobCancelled when the caller asked to stop (polled between steps)."""
        if self.callbacks.should_cancel():
            raise JobCancelled(f"cancelled during phase {self.phase}")
