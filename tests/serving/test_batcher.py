"""Micro-batching: batch sizes, the wait bound, the bounded queue, closing, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.serving.batcher import MicroBatcher
from app.serving.errors import BatcherClosed, QueueFull

pytestmark = pytest.mark.unit


class Recorder:
    """A fake model: doubles its inputs, records every batch, can be held closed."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self, values: list[int]) -> Sequence[int]:
        self.batches.append(list(values))
        self.started.set()
        await self.gate.wait()
        return [2 * v for v in values]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_burst_is_cut_into_full_batches_in_order() -> None:
    async def main() -> None:
        model = Recorder()
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_s=10.0, max_queue=100)
        batcher.start()
        futures = batcher.submit(list(range(10)))
        # 10 items, max 4: two full batches at once; the last 2 wait for more (max_wait is
        # long), so closing with drain flushes them.
        await _settle()
        assert model.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
        await batcher.close(drain=True)
        assert model.batches[-1] == [8, 9]
        assert [f.result() for f in futures] == [2 * i for i in range(10)]

    asyncio.run(main())


def test_a_lone_request_waits_at_most_max_wait() -> None:
    async def main() -> None:
        model = Recorder()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=0.02, max_queue=100)
        batcher.start()
        (future,) = batcher.submit([5])
        assert await asyncio.wait_for(future, 2.0) == 10
        assert model.batches == [[5]]
        await batcher.close(drain=True)

    asyncio.run(main())


def test_requests_arriving_during_a_batch_form_the_next_one() -> None:
    async def main() -> None:
        model = Recorder()
        model.gate.clear()
        batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=0.0, max_queue=100)
        batcher.start()
        first = batcher.submit([1])
        await model.started.wait()  # batch [1] is running and held
        later = [batcher.submit([i]) for i in range(2, 6)]
        model.gate.set()
        await asyncio.gather(*first, *(f for fs in later for f in fs))
        assert model.batches == [[1], [2, 3, 4, 5]]
        await batcher.close(drain=True)

    asyncio.run(main())


def test_full_queue_refuses_the_whole_request_with_retry_after() -> None:
    async def main() -> None:
        model = Recorder()
        model.gate.clear()
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_s=0.0, max_queue=3)
        batcher.start()
        running = batcher.submit([0])
        await model.started.wait()
        queued = batcher.submit([1, 2])
        with pytest.raises(QueueFull) as info:
            batcher.submit([3, 4])  # 2 + 2 > 3: none of it is queued
        assert info.value.retry_after_s >= 1
        assert batcher.depth == 2
        fits = batcher.submit([3])  # exactly full is fine
        model.gate.set()
        results = await asyncio.gather(*running, *queued, *fits)
        assert results == [0, 2, 4, 6]
        # A request larger than the whole queue is taken only by an empty queue.
        model.gate.clear()
        big = batcher.submit([5, 6, 7, 8])
        await _settle()
        with pytest.raises(QueueFull):
            batcher.submit([9])
        model.gate.set()
        assert await asyncio.gather(*big) == [10, 12, 14, 16]
        await batcher.close(drain=True)

    asyncio.run(main())


def test_close_without_drain_fails_queued_inputs() -> None:
    async def main() -> None:
        model = Recorder()
        model.gate.clear()
        batcher = MicroBatcher(model, max_batch_size=1, max_wait_s=0.0, max_queue=10)
        batcher.start()
        running = batcher.submit([0])
        await model.started.wait()
        queued = batcher.submit([1])
        closing = asyncio.create_task(batcher.close(drain=False))
        await _settle()
        model.gate.set()
        await closing
        assert await running[0] == 0  # the batch already running completes
        with pytest.raises(BatcherClosed):
            await queued[0]
        with pytest.raises(BatcherClosed):
            batcher.submit([2])

    asyncio.run(main())


def test_a_failing_batch_fails_its_callers_and_the_worker_lives_on() -> None:
    async def main() -> None:
        calls = 0

        async def flaky(values: list[int]) -> Sequence[int]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("boom")
            return values

        batcher = MicroBatcher(flaky, max_batch_size=4, max_wait_s=0.0, max_queue=10)
        batcher.start()
        (bad,) = batcher.submit([1])
        with pytest.raises(RuntimeError, match="boom"):
            await bad
        (good,) = batcher.submit([2])
        assert await good == 2
        await batcher.close(drain=True)

    asyncio.run(main())


def test_cancelled_callers_are_skipped() -> None:
    async def main() -> None:
        model = Recorder()
        model.gate.clear()
        batcher = MicroBatcher(model, max_batch_size=4, max_wait_s=0.0, max_queue=10)
        batcher.start()
        running = batcher.submit([0])
        await model.started.wait()
        gone = batcher.submit([1, 2])
        kept = batcher.submit([3])
        for f in gone:
            f.cancel()
        model.gate.set()
        assert await kept[0] == 6
        assert await running[0] == 0
        assert model.batches == [[0], [3]]
        await batcher.close(drain=True)

    asyncio.run(main())
