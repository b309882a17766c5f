"""The batch size a deployment runs with, picked from its own measured curve at load time.

How much a batch saves per input depends on the model and the machine: on a 2-core CPU an
encoder is already a matrix product per sequence and gains 1.3x from batch 1 to 32, on an
accelerator it can gain tens of times. So rather than trusting a configured number, the
warm-up times the model at batch 1, 2, 4, ... up to the deployment's `max_batch_size` on a
typical input (`measure_curve`) and keeps the smallest size within `TOLERANCE` of the best
time per input (`pick_batch_size`): bigger batches than that buy no throughput and make the
first requests of a batch wait for the last.

The timing is the best of a few runs (a shared machine only ever makes a run slower) and
stops early when the time per input has grown for two sizes in a row or the time budget is
spent, so it stays well under a second for a small model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# A batch size within this fraction of the best time per input counts as good as the best.
TOLERANCE = 0.05
REPEATS = 3
BUDGET_S = 3.0
# A typical short input: about 30 tokens, like a median Rotten Tomatoes snippet.
PROBE_TEXT = "a quietly gripping film whose cast and script keep the tension up until the very end"


def sizes_up_to(max_size: int) -> list[int]:
    """1, 2, 4, ... and `max_size` itself."""
    sizes, b = [], 1
    while b < max_size:
        sizes.append(b)
        b *= 2
    sizes.append(max_size)
    return sizes


def measure_curve(
    run_batch: Callable[[int], object],
    max_size: int,
    *,
    repeats: int = REPEATS,
    budget_s: float = BUDGET_S,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """Seconds per input at each of `sizes_up_to(max_size)`: the best of `repeats` timed calls
    of `run_batch(b)` (one untimed call first, to warm the size's buffers)."""
    curve: dict[int, float] = {}
    deadline = clock() + budget_s
    rising = 0
    previous: float | None = None
    for size in sizes_up_to(max_size):
        run_batch(size)
        best = float("inf")
        for _ in range(repeats):
            started = clock()
            run_batch(size)
            best = min(best, clock() - started)
        per_input = best / size
        curve[size] = per_input
        rising = rising + 1 if previous is not None and per_input > previous else 0
        previous = per_input
        if rising >= 2 or clock() > deadline:
            break
    return curve


def pick_batch_size(curve: dict[int, float], tolerance: float = TOLERANCE) -> int:
    """The smallest batch size whose time per input is within `tolerance` of the best."""
    if not curve:
        raise ValueError("an empty curve")
    best = min(curve.values())
    return min(size for size, t in curve.items() if t <= best * (1 + tolerance))
