"""Length-grouped training batches."""

from __future__ import annotations

import numpy as np
import pytest

from sec_engine.data.encoding import Features, iter_batches, length_grouped_batches

pytestmark = pytest.mark.unit


def _features(n: int, seed: int = 0) -> list[Features]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 60, size=n)
    return [{"input_ids": [5] * int(k), "attention_mask": [1] * int(k)} for k in lengths]


def _padded_tokens(batches: list) -> int:
    return sum(int(b.inputs["input_ids"].numel()) for b in batches)


def test_every_row_once_per_epoch_and_padding_only_to_the_batch() -> None:
    feats = _features(203)
    batches = list(length_grouped_batches(feats, 8, 0, np.random.default_rng(1), group_batches=5))
    seen = sorted(i for b in batches for i in b.index)
    assert seen == list(range(203))
    for b in batches:
        longest = max(len(feats[i]["input_ids"]) for i in b.index)
        assert b.inputs["input_ids"].shape == (len(b.index), longest)
        for row, i in enumerate(b.index):
            k = len(feats[i]["input_ids"])
            assert int(b.inputs["attention_mask"][row].sum()) == k


def test_grouping_pads_less_than_random_batches_and_is_seeded() -> None:
    feats = _features(400)
    grouped = list(length_grouped_batches(feats, 16, 0, np.random.default_rng(3)))
    shuffled = list(iter_batches(feats, 16, 0, rng=np.random.default_rng(3)))
    assert _padded_tokens(grouped) < 0.8 * _padded_tokens(shuffled)
    again = list(length_grouped_batches(feats, 16, 0, np.random.default_rng(3)))
    assert [b.index for b in again] == [b.index for b in grouped]
    other = list(length_grouped_batches(feats, 16, 0, np.random.default_rng(4)))
    assert [b.index for b in other] != [b.index for b in grouped]
