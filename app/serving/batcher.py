"""Dynamic micro-batching over a bounded queue, for one deployment.

Requests put their inputs (one item each) on the queue and await one future per item. A
single worker task runs one batch at a time through `run_batch` (which hands it to a thread
pool, so the event loop never blocks):

- when the model is idle, the worker takes what is queued at once: a lone request never
  waits for company (`max_wait_s` = 0, the default);
- while a batch runs, the next one fills, and the worker takes up to `max_batch_size` of
  what arrived meanwhile as soon as the model is free: under load batches come out full
  without anyone waiting on a timer;
- `max_wait_s` > 0 (opt-in, for hardware where a small batch leaves most of the device
  idle) makes an idle model wait up to that long after the oldest queued item arrived for a
  fuller batch.

So at one client micro-batching is one-at-a-time, and under load it never runs a batch
bigger than `max_batch_size`, which the serving manager picks from the model's measured
curve (app/serving/batch_size.py); how a batch is cut into model calls (by length and
padded tokens) is the model's business (app/serving/model.py).

The queue is bounded in items, and a request's inputs are admitted all together or not at
all, so one request is never half-served (one larger than the whole queue is taken when the
queue is empty). When they do not fit, `submit` raises `QueueFull`
with an estimate of when there will be room (from the measured time per item), which the
API turns into 429 + Retry-After: overload is refused, not queued without bound.

Why a deque and an Event rather than `asyncio.Queue`: admission must check the room for a
whole request, and gathering a batch with a deadline needs "wait until more items or the
deadline", which an Event does without the cancel-while-getting pitfalls of
`wait_for(queue.get())`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.serving.errors import BatcherClosed, QueueFull

T = TypeVar("T")
R = TypeVar("R")

# Weight of the newest batch in the moving average of seconds per item.
_EWMA = 0.2


@dataclass
class _Item(Generic[T, R]):
    value: T
    future: asyncio.Future[R]
    enqueued: float


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_s >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.name = name
        self._items: deque[_Item[T, R]] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        self._seconds_per_item = 0.01  # until the first batch has been measured
        self.batches_run = 0
        self.items_run = 0

    @property
    def depth(self) -> int:
        """Items waiting (not counting the batch being run)."""
        return len(self._items)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"sec-batcher-{self.name}"
            )

    def submit(self, values: Sequence[T]) -> list[asyncio.Future[R]]:
        """Queue all `values` or none; one future per value, in order."""
        if self._closed:
            raise BatcherClosed(f"{self.name} is unloaded")
        # A request larger than the whole queue goes into an empty queue (else it could never
        # run): the bound is then max(max_queue, inputs per request), still a bound.
        if self._items and len(self._items) + len(values) > self.max_queue:
            raise QueueFull(
                f"the deployment's queue is full ({len(self._items)} of {self.max_queue} inputs"
                f" waiting, this request has {len(values)}); retry later",
                retry_after_s=self.retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures: list[asyncio.Future[R]] = []
        for value in values:
            future: asyncio.Future[R] = loop.create_future()
            self._items.append(_Item(value, future, now))
            futures.append(future)
        self._wakeup.set()
        return futures

    def retry_after_s(self) -> int:
        """Whole seconds until the queue has drained at the measured speed (at least 1)."""
        return max(1, math.ceil(len(self._items) * self._seconds_per_item))

    async def close(self, *, drain: bool) -> None:
        """Stop taking inputs. `drain`: run what is queued first; else fail it."""
        self._closed = True
        if not drain:
            while self._items:
                item = self._items.popleft()
                if not item.future.done():
                    item.future.set_exception(BatcherClosed(f"{self.name} was unloaded"))
        self._wakeup.set()
        if self._worker is not None:
            await asyncio.shield(self._worker)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._fill(loop)
            batch = [self._items.popleft() for _ in range(min(self.max_batch_size, self.depth))]
            live = [item for item in batch if not item.future.done()]  # skip cancelled callers
            if live:
                await self._run(loop, live)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a full batch, until `max_wait_s` after the oldest item arrived."""
        deadline = self._items[0].enqueued + self.max_wait_s
        while len(self._items) < self.max_batch_size and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Item[T, R]]) -> None:
        started = loop.time()
        try:
            results = await self._run_batch([item.value for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:  # every caller of the batch gets the error, the worker lives on
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        for item, result in zip(batch, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)
        per_item = (loop.time() - started) / len(batch)
        self._seconds_per_item += _EWMA * (per_item - self._seconds_per_item)
        self.batches_run += 1
        self.items_run += len(batch)
