"""The calibration leaves the job's models untouched and prices every unit the plan uses."""

from __future__ import annotations

import pytest
import torch

from sec_engine.calibration import REPEATS, SLOW_RUN_S, _time, calibrate
from sec_engine.data.encoding import Batch

from .compression.tiny_models import build_tiny

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")


def _features(n: int = 16) -> list[dict[str, list[int]]]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        length = 4 + i % 6
        ids = [1, *torch.randint(5, 99, (length - 2,), generator=gen).tolist(), 2]
        rows.append(
            {"input_ids": ids, "attention_mask": [1] * length, "token_type_ids": [0] * length}
        )
    return rows


def test_every_unit_is_priced_and_the_teacher_is_untouched() -> None:
    teacher = build_tiny("bert")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    tp = calibrate(teacher, None, _features(), batch_size=4, pad=0, device=CPU, hidden_states=True)
    for value in (
        tp.teacher_step_s,
        tp.teacher_infer_row_s,
        tp.student_step_s,
        tp.student_infer_row_s,
        tp.teacher_forward,
    ):
        assert value > 0
    # A soft batch is timed, not assumed: its cost is measured apart from the step's.
    assert tp.soft_batch_s is not None
    assert tp.soft_batch_s >= 0
    assert tp.teacher_forward_s is not None
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_slow_batches_are_timed_once_and_fast_ones_at_their_cheapest() -> None:
    """A scripted clock: each call of the work advances it by that batch's cost, the repeats
    of a fast batch cost less each time (interference that fades), a slow one costs the same."""
    now = [0.0]
    calls: dict[str, int] = {"fast": 0, "slow": 0}
    cost = {"fast": [0.9, 0.5, 0.3, 0.4], "slow": [5.0, 3.0]}

    def work(batch: Batch) -> None:
        name = "fast" if batch.index == [0] else "slow"
        now[0] += cost[name][calls[name]]
        calls[name] += 1

    batches = [Batch({}, [0]), Batch({}, [1])]
    per_batch = _time(work, batches, lambda: now[0])
    assert calls == {"fast": 1 + REPEATS, "slow": 2}
    assert 0.9 < SLOW_RUN_S < 5.0  # the script's premise: one batch each side of the line
    assert per_batch == pytest.approx((0.3 + 3.0) / 2)
