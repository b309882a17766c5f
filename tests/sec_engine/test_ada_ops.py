"""Augmentation operators, embedding neighbours and the adaptive allocation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sec_engine.data import ada_ops
from sec_engine.data.wordnet_setup import wordnet_available

pytestmark = pytest.mark.unit

WORDS = ["the", "acting", "was", "superb", "and", "the", "plot", "was", "clever"]


def _syn(word: str) -> list[str]:
    return {"superb": ["excellent"], "clever": ["smart"], "acting": ["performance"]}.get(word, [])


def test_operators_change_text_within_strength() -> None:
    rng = np.random.default_rng(0)
    replaced = ada_ops.synonym_replacement(WORDS, 2, _syn, rng)
    assert len(replaced) == len(WORDS)
    assert sum(a != b for a, b in zip(replaced, WORDS, strict=True)) == 2
    inserted = ada_ops.random_insertion(WORDS, 2, _syn, rng)
    assert len(inserted) == len(WORDS) + 2
    swapped = ada_ops.random_swap(WORDS, 1, rng)
    assert sorted(swapped) == sorted(WORDS)
    assert swapped != WORDS
    deleted = ada_ops.random_deletion(WORDS, 0.5, rng)
    assert 1 <= len(deleted) < len(WORDS)
    assert ada_ops.random_deletion(["one"], 0.9, rng) == ["one"]


def test_operators_are_seeded() -> None:
    text = " ".join(WORDS)
    synonyms = {"embedding_synonym": _syn}
    a = [
        ada_ops.apply_operator(op, text, 0.3, np.random.default_rng(3), synonyms)
        for op in ("embedding_synonym", "random_swap", "random_deletion", "random_insertion")
    ]
    b = [
        ada_ops.apply_operator(op, text, 0.3, np.random.default_rng(3), synonyms)
        for op in ("embedding_synonym", "random_swap", "random_deletion", "random_insertion")
    ]
    assert a == b
    with pytest.raises(ValueError, match="unknown"):
        ada_ops.apply_operator("back_translation", text, 0.3, np.random.default_rng(0), synonyms)


class _Tok:
    def get_vocab(self) -> dict[str, int]:
        return {"[PAD]": 0, "good": 1, "great": 2, "bad": 3, "##s": 4}


def test_embedding_neighbours_are_nearest_whole_words() -> None:
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.1], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.05]])
    nn = ada_ops.EmbeddingNeighbours(emb, _Tok(), k=2)
    assert nn("good") == ["great", "bad"]
    assert nn("Good") == ["great", "bad"]  # cached, case-folded
    assert nn("unknown") == []


def test_allocation_gives_hard_examples_more_and_stronger_edits() -> None:
    losses = np.array([0.05, 0.1, 2.0, 3.0])
    labels = np.array([0, 0, 1, 1])
    alloc = ada_ops.allocate(losses, labels, max_per_example=4, max_strength=0.4)
    assert alloc.counts[3] > alloc.counts[0]
    assert alloc.strengths[3] > alloc.strengths[0]
    assert alloc.strengths.max() <= 0.4
    assert alloc.counts.min() >= 0


@pytest.mark.skipif(
    not wordnet_available(),
    reason="WordNet not installed (python -m sec_engine.data.wordnet_setup)",
)
def test_wordnet_synonyms() -> None:
    assert "estimable" in ada_ops.wordnet_synonyms("good") or ada_ops.wordnet_synonyms("good")
