"""Uncertainty scorers, the acquisition plan and pseudo-labelling."""

from __future__ import annotations

import numpy as np
import pytest

from sec_engine.data.tal_ops import (
    Entropy,
    Margin,
    Random,
    acquisition_plan,
    make_heuristic,
    pseudo_labels,
)
from sec_engine.spec import AcquisitionStrategy

pytestmark = pytest.mark.unit

PROBS = np.array([[0.99, 0.01], [0.5, 0.5], [0.7, 0.3], [0.55, 0.45]])


def test_entropy_and_margin_rank_the_most_uncertain_first() -> None:
    assert list(Entropy(0).rank(PROBS)) == [1, 3, 2, 0]
    assert list(Margin(0).rank(PROBS)) == [1, 3, 2, 0]
    assert list(Entropy(0).select(PROBS, 2)) == [1, 3]


def test_margin_and_entropy_differ_on_three_classes() -> None:
    probs = np.array([[0.4, 0.4, 0.2], [0.5, 0.25, 0.25]])
    assert Margin(0).score(probs)[0] > Margin(0).score(probs)[1]  # tie at the top: margin 0
    assert Entropy(0).score(probs)[0] > Entropy(0).score(probs)[1]


def test_ties_are_broken_by_the_seed_not_by_order() -> None:
    probs = np.full((50, 2), 0.5)
    a, b = Random(1).rank(probs), Random(2).rank(probs)
    assert sorted(a) == list(range(50))
    assert list(a) != list(b)
    assert list(Random(1).rank(probs)) == list(a)
    assert isinstance(make_heuristic(AcquisitionStrategy.MARGIN, 0), Margin)


def test_acquisition_plan_spends_exactly_the_budget() -> None:
    plan = acquisition_plan(1000, 0.7, 0.3, 3, min_seed=4)
    assert sum(plan) == 700
    assert plan[0] == 210
    assert len(plan) == 4
    assert acquisition_plan(10, 0.1, 0.3, 2, min_seed=4)[0] == 4


def test_pseudo_labels_keep_only_confident_rows() -> None:
    keep, conf = pseudo_labels(PROBS, 0.7)
    assert list(keep) == [0, 2]
    assert np.allclose(conf, [0.99, 0.7])
