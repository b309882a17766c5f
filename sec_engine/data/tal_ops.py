"""TAL ops: uncertainty scorers (baal-style), the acquisition plan, and pseudo-labelling.

A scorer maps class probabilities to one uncertainty score per row (higher = more worth a
label). Ranking and tie-breaking live once in the base class: ties are broken by a seeded
random permutation, so equal scores never favour the pool's file order.
"""

from __future__ import annotations

import math

import numpy as np

from sec_engine.spec import AcquisitionStrategy

_EPS = 1e-12


class Heuristic:
    """Base scorer: subclasses define `score`; `rank` / `select` are shared."""

    name = "heuristic"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def score(self, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def rank(self, probs: np.ndarray) -> np.ndarray:
        """Row indices, most uncertain first; ties in random (seeded) order."""
        scores = np.asarray(self.score(probs), dtype=np.float64)
        shuffled = self.rng.permutation(len(scores))
        order = np.argsort(-scores[shuffled], kind="stable")
        return np.asarray(shuffled[order])

    def select(self, probs: np.ndarray, k: int) -> np.ndarray:
        return self.rank(probs)[: max(0, k)]


class Entropy(Heuristic):
    name = "entropy"

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = np.clip(probs, _EPS, 1.0)
        return np.asarray(-(p * np.log(p)).sum(axis=1))


class Margin(Heuristic):
    """Smaller gap between the two likeliest classes = more uncertain (score = −margin)."""

    name = "margin"

    def score(self, probs: np.ndarray) -> np.ndarray:
        top2 = np.sort(probs, axis=1)[:, -2:]
        return np.asarray(-(top2[:, 1] - top2[:, 0]))


class Random(Heuristic):
    """The baseline: every row scores the same, so the seeded tie-break decides."""

    name = "random"

    def score(self, probs: np.ndarray) -> np.ndarray:
        return np.zeros(len(probs))


def make_heuristic(strategy: AcquisitionStrategy, seed: int) -> Heuristic:
    classes: dict[AcquisitionStrategy, type[Heuristic]] = {
        AcquisitionStrategy.ENTROPY: Entropy,
        AcquisitionStrategy.MARGIN: Margin,
        AcquisitionStrategy.RANDOM: Random,
    }
    return classes[strategy](seed)


def acquisition_plan(
    n_pool: int, label_budget: float, initial_fraction: float, rounds: int, min_seed: int
) -> list[int]:
    """Labels bought per round: [seed, round 1, ..., round R], summing to the budget.

    The budget is floor(label_budget × n_pool); the random seed set takes `initial_fraction`
    of it (at least `min_seed`, so every class can appear), the rounds split the rest evenly.
    """
    budget = min(n_pool, max(min_seed, math.floor(label_budget * n_pool)))
    seed = min(budget, max(min_seed, round(initial_fraction * budget)))
    rest = budget - seed
    per_round = [rest // rounds + (1 if r < rest % rounds else 0) for r in range(rounds)]
    return [seed, *per_round]


def pseudo_labels(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose top probability reaches `threshold`, and that confidence (the row weight)."""
    conf = probs.max(axis=1)
    keep = np.nonzero(conf >= threshold)[0]
    return keep, conf[keep]
