"""The soft-label cross-entropy the teacher's pseudo-label term and R_data share."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sec_engine.training import soft_cross_entropy

pytestmark = pytest.mark.unit


def test_soft_cross_entropy_is_per_row_and_matches_hard_labels_on_one_hot_targets() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 2])
    per_row = soft_cross_entropy(logits, F.one_hot(labels, 3).float())
    assert per_row.shape == (2,)
    torch.testing.assert_close(per_row, F.cross_entropy(logits, labels, reduction="none"))


def test_soft_cross_entropy_of_a_uniform_target_is_the_mean_negative_log_probability() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    uniform = torch.full((1, 4), 0.25)
    expected = -F.log_softmax(logits, dim=-1).mean(dim=-1)
    torch.testing.assert_close(soft_cross_entropy(logits, uniform), expected)
