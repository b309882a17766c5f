"""Batching policy: a lone request never waits, batches form from what arrives while the model
is busy, model calls are cut by length and padded tokens, and the batch size comes from the
model's measured curve (scripted timings here: no timing is asserted)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.serving.batch_size import measure_curve, pick_batch_size, sizes_up_to
from app.serving.batcher import MicroBatcher
from app.serving.model import plan_batches

pytestmark = pytest.mark.unit


class Model:
    """Records every batch; can be held busy."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self, values: list[int]) -> Sequence[int]:
        self.batches.append(list(values))
        self.started.set()
        await self.gate.wait()
        return values


def test_a_lone_request_is_dispatched_at_once_with_the_default_policy() -> None:
    async def main() -> None:
        model = Model()
        batcher = MicroBatcher(model, max_batch_size=32, max_wait_s=0.0, max_queue=100)
        batcher.start()
        (future,) = batcher.submit([7])
        # No timer is involved: a few loop turns are enough for the batch to run and answer.
        for _ in range(5):
            await asyncio.sleep(0)
        assert future.done()
        assert future.result() == 7
        assert model.batches == [[7]]
        await batcher.close(drain=True)

    asyncio.run(main())


def test_what_arrives_while_the_model_is_busy_is_the_next_batch_capped_in_rows() -> None:
    async def main() -> None:
        model = Model()
        model.gate.clear()
        batcher = MicroBatcher(model, max_batch_size=3, max_wait_s=0.0, max_queue=100)
        batcher.start()
        first = batcher.submit([0])
        await model.started.wait()
        later = [f for i in range(1, 6) for f in batcher.submit([i])]
        model.gate.set()
        assert await asyncio.gather(*first, *later) == list(range(6))
        assert model.batches == [[0], [1, 2, 3], [4, 5]]
        await batcher.close(drain=True)

    asyncio.run(main())


def test_plan_groups_by_length_and_caps_rows_and_padded_tokens() -> None:
    lengths = [10, 100, 11, 12, 98, 9, 10, 300]
    groups = plan_batches(lengths, max_rows=64, max_tokens=10_000)
    # Sorted by length; cut where the length grows past 1.25x (+4) of the group's shortest.
    assert [[lengths[i] for i in g] for g in groups] == [[9, 10, 10, 11, 12], [98, 100], [300]]
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))

    same = [20] * 10
    by_rows = plan_batches(same, max_rows=4, max_tokens=10_000)
    assert [len(g) for g in by_rows] == [4, 4, 2]
    by_tokens = plan_batches(same, max_rows=64, max_tokens=100)  # 5 rows x 20 tokens
    assert [len(g) for g in by_tokens] == [5, 5]
    assert all(len(g) * 20 <= 100 for g in by_tokens)
    assert plan_batches([500], max_rows=8, max_tokens=100) == [[0]]  # too long: runs alone
    with pytest.raises(ValueError, match="max_rows"):
        plan_batches([1], max_rows=0, max_tokens=1)


class ScriptedModel:
    """A batch of b costs `cost(b)` seconds on a fake clock."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.cost = cost
        self.now = 0.0
        self.calls: list[int] = []

    def clock(self) -> float:
        return self.now

    def run(self, size: int) -> None:
        self.calls.append(size)
        self.now += self.cost[size]


def test_the_batch_size_is_the_smallest_near_the_best_of_the_measured_curve() -> None:
    # Per input: 1.0, 0.7, 0.55, 0.52, 0.51, 0.5 ms: batches past 8 buy under 5 %.
    per_input = {1: 1.0, 2: 0.7, 4: 0.55, 8: 0.52, 16: 0.51, 32: 0.5}
    model = ScriptedModel({b: b * t / 1000 for b, t in per_input.items()})
    curve = measure_curve(model.run, 32, repeats=2, clock=model.clock)
    assert sorted(curve) == [1, 2, 4, 8, 16, 32]
    assert curve[8] == pytest.approx(0.52e-3)
    assert pick_batch_size(curve) == 8
    assert pick_batch_size(curve, tolerance=0.0) == 32


def test_a_curve_that_rises_stops_early_and_never_picks_a_slower_batch() -> None:
    # Batching hurts past 2 (as padding did on CPU before length grouping).
    per_input = {1: 1.0, 2: 0.9, 4: 1.2, 8: 1.5, 16: 2.0, 32: 3.0}
    model = ScriptedModel({b: b * t / 1000 for b, t in per_input.items()})
    curve = measure_curve(model.run, 32, repeats=1, clock=model.clock)
    assert sorted(curve) == [1, 2, 4, 8]  # two rises in a row: stop
    assert 16 not in model.calls
    assert pick_batch_size(curve) == 2
    flat = ScriptedModel(dict.fromkeys(sizes_up_to(16), 0.0))
    assert pick_batch_size(measure_curve(flat.run, 16, clock=flat.clock)) == 1


def test_the_budget_bounds_the_measurement() -> None:
    model = ScriptedModel({b: float(b) for b in sizes_up_to(64)})  # 1 s per input
    curve = measure_curve(model.run, 64, repeats=1, budget_s=5.0, clock=model.clock)
    assert max(curve) < 64
    assert sizes_up_to(20) == [1, 2, 4, 8, 16, 20]
    assert sizes_up_to(1) == [1]
