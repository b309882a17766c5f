"""A background thread that keeps a running job's lease alive.

It renews `lease_expires_at` every `interval` seconds in its own session, so a long engine step
(minutes inside one forward/backward loop) never lets the lease lapse. If the worker process
dies, the renewals stop and the reaper takes the job back once the lease runs out. If a renewal
finds the job is no longer ours, `lost` is set and the job's cancel check stops the engine.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from app.db.session import unit_of_work
from app.jobs import state_machine
from workers.context import WorkerContext

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, ctx: WorkerContext, job_id: str, attempt: int) -> None:
        self._ctx = ctx
        self._job_id = job_id
        self._attempt = state_machine.Attempt(job_id, ctx.worker_id, attempt)
        self._interval = float(ctx.settings.job_heartbeat_seconds)
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def beat(self) -> None:
        """Renew the lease once. A database hiccup is logged, not fatal: the next beat retries."""
        try:
            with unit_of_work(self._ctx.sessions) as session:
                ours = state_machine.renew_lease(
                    session,
                    self._attempt,
                    self._ctx.clock(),
                    self._ctx.settings.job_lease_seconds,
                )
        except Exception:
            logger.warning("heartbeat for job %s failed", self._job_id, exc_info=True)
            return
        if not ours:
            logger.warning("job %s is no longer held by this worker", self._job_id)
            self.lost.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()
            if self.lost.is_set():
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 30)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
