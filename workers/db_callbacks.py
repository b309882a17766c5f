"""`EngineCallbacks` backed by the database: how a running engine talks to the job row.

Each call is a short transaction of its own, so what the engine reports is visible through
the API at once (events, trace, progress) and survives a crash. Progress writes and cancel
reads are throttled: the engine may call them every training step, the database should not
see every one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.db.models import JobStatus
from app.db.models import TraceRow as TraceRowModel
from app.db.session import unit_of_work
from app.jobs import state_machine
from sec_engine.callbacks import Phase, TraceRow
from workers.context import WorkerContext

logger = logging.getLogger(__name__)


class DbCallbacks:
    """Engine callbacks for one attempt of one job, writing as `ctx.worker_id`."""

    def __init__(
        self,
        ctx: WorkerContext,
        job_id: str,
        attempt: int,
        *,
        lost: threading.Event | None = None,
        progress_interval: float = 2.0,
        cancel_interval: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._attempt = state_machine.Attempt(job_id, ctx.worker_id, attempt)
        self._lost = lost or threading.Event()
        self._progress_interval = progress_interval
        self._cancel_interval = cancel_interval
        self._monotonic = monotonic
        self._last_progress_at = -float("inf")
        self._last_phase: str | None = None
        self._last_cancel_check = -float("inf")
        self._cancel = False

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        with unit_of_work(self._ctx.sessions) as session:
            state_machine.add_event(
                session, self._job_id, self._attempt.number, kind, message, data, self._ctx.clock()
            )

    def trace(self, row: TraceRow) -> None:
        """Store one controller step. A step number the job already has is logged and dropped:
        the trace is a report, and a duplicate must not fail a job that is otherwise fine (the
        artifact's own trace file keeps every row)."""
        try:
            with unit_of_work(self._ctx.sessions) as session:
                session.add(self._trace_model(row))
        except IntegrityError:
            logger.warning("job %s: duplicate trace step %d dropped", self._job_id, row.step)

    def _trace_model(self, row: TraceRow) -> TraceRowModel:
        return TraceRowModel(
            job_id=self._job_id,
            step=row.step,
            phase=str(row.phase),
            lambda1=row.lambda1,
            lambda2=row.lambda2,
            loss_task=row.loss_task,
            loss_data=row.loss_data,
            loss_model=row.loss_model,
            val_accuracy=row.val_accuracy,
            sparsity=row.sparsity,
            size_mb=row.size_mb,
            labels_used=row.labels_used,
            observation=row.observation,
            decision=row.decision,
            created_at=self._ctx.clock(),
        )

    def progress(self, phase: Phase, fraction: float) -> None:
        now = self._monotonic()
        phase_changed = str(phase) != self._last_phase
        due = now - self._last_progress_at >= self._progress_interval
        if not (phase_changed or due or fraction >= 1.0):
            return
        self._last_progress_at = now
        self._last_phase = str(phase)
        with unit_of_work(self._ctx.sessions) as session:
            ours = state_machine.set_progress(session, self._attempt, str(phase), fraction)
        if not ours:
            self._lost.set()

    def should_cancel(self) -> bool:
        """True once a cancel was requested, or once the job is no longer this worker's."""
        if self._cancel or self._lost.is_set():
            return True
        now = self._monotonic()
        if now - self._last_cancel_check < self._cancel_interval:
            return False
        self._last_cancel_check = now
        with unit_of_work(self._ctx.sessions) as session:
            status = state_machine.held_status(session, self._attempt)
        if status is None:
            logger.warning("job %s was taken from this worker; stopping", self._job_id)
            self._lost.set()
        elif status is JobStatus.CANCEL_REQUESTED:
            self._cancel = True
        return self._cancel or self._lost.is_set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()
