"""ADA ops: text augmentation operators and the adaptive allocation (paper eq. 1).

Operators work on whitespace words with a seeded generator (EDA, Wei & Zou 2019); synonym
sources are pluggable: WordNet (when installed) and nearest neighbours in the model's own
input-embedding space (always available). `allocate` turns per-example losses into how many
augmentations each example gets and how strong they are: more and stronger where the model's
loss is high (relative to its class and to the set), fewer and milder where it already fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

SynonymFn = Callable[[str], list[str]]
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "is",
        "was",
        "are",
        "were",
        "be",
        "it",
        "this",
        "that",
    ]
)


def _candidates(words: Sequence[str]) -> list[int]:
    return [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in _STOP]


def synonym_replacement(
    words: list[str], n: int, synonyms: SynonymFn, rng: np.random.Generator
) -> list[str]:
    out = list(words)
    positions = _candidates(out)
    rng.shuffle(positions)
    done = 0
    for i in positions:
        if done >= n:
            break
        options = [s for s in synonyms(out[i]) if s.lower() != out[i].lower()]
        if options:
            out[i] = options[int(rng.integers(len(options)))]
            done += 1
    return out


def random_insertion(
    words: list[str], n: int, synonyms: SynonymFn, rng: np.random.Generator
) -> list[str]:
    out = list(words)
    positions = _candidates(out)
    inserted = 0
    for _ in range(5 * n):  # words without synonyms are retried, a bounded number of times
        if inserted >= n or not positions:
            break
        options = synonyms(out[positions[int(rng.integers(len(positions)))]])
        if options:
            out.insert(int(rng.integers(len(out) + 1)), options[int(rng.integers(len(options)))])
            inserted += 1
            positions = _candidates(out)
    return out


def random_swap(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = (int(x) for x in rng.choice(len(out), size=2, replace=False))
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: np.random.Generator) -> list[str]:
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() >= p]
    return kept or [words[int(rng.integers(len(words)))]]


def apply_operator(
    op: str, text: str, strength: float, rng: np.random.Generator, synonyms: dict[str, SynonymFn]
) -> str:
    """One operator at `strength` (fraction of words touched, at least one)."""
    words = text.split()
    n = max(1, round(strength * len(words)))
    if op in ("wordnet_synonym", "embedding_synonym"):
        out = synonym_replacement(words, n, synonyms[op], rng)
    elif op == "random_insertion":
        source = synonyms.get("wordnet_synonym") or synonyms["embedding_synonym"]
        out = random_insertion(words, n, source, rng)
    elif op == "random_swap":
        out = random_swap(words, n, rng)
    elif op == "random_deletion":
        out = random_deletion(words, strength, rng)
    else:
        raise ValueError(f"unknown augmentation operator {op!r}")
    return " ".join(out)


def wordnet_synonyms(word: str) -> list[str]:
    from nltk.corpus import wordnet

    names = {
        lemma.name().replace("_", " ")
        for synset in wordnet.synsets(word.lower())[:4]
        for lemma in synset.lemmas()
    }
    return sorted(n for n in names if n.lower() != word.lower() and " " not in n)


class EmbeddingNeighbours:
    """Synonyms as nearest whole-word tokens by cosine similarity of input embeddings.

    Only single-token words have an embedding of their own; other words get no synonym. The
    candidates are alphabetic whole-word tokens (no '##' pieces, no specials). Lookups are
    cached, so each distinct word costs one matrix-vector product.
    """

    def __init__(self, embeddings: torch.Tensor, tokenizer: object, k: int = 5) -> None:
        vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
        self.word_to_id = {w: i for w, i in vocab.items() if w.isalpha()}
        ids = sorted(self.word_to_id.values())
        self.cand_ids = torch.tensor(ids, dtype=torch.long)
        id_to_word = {i: w for w, i in self.word_to_id.items()}
        self.cand_words = [id_to_word[i] for i in ids]
        weights = embeddings.detach().float().cpu()[self.cand_ids]
        self.normed = weights / weights.norm(dim=1, keepdim=True).clamp_min(1e-8)
        self.full = embeddings.detach().float().cpu()
        self.k = k
        self.cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        key = word.lower()
        if key not in self.cache:
            self.cache[key] = self._lookup(key)
        return self.cache[key]

    def _lookup(self, word: str) -> list[str]:
        idx = self.word_to_id.get(word)
        if idx is None:
            return []
        v = self.full[idx]
        sims = self.normed @ (v / v.norm().clamp_min(1e-8))
        top = torch.topk(sims, min(self.k + 1, len(self.cand_words))).indices.tolist()
        return [self.cand_words[i] for i in top if self.cand_words[i] != word][: self.k]


@dataclass(frozen=True)
class Allocation:
    counts: np.ndarray  # augmentations per example
    strengths: np.ndarray  # fraction of words each augmentation touches


def allocate(
    losses: np.ndarray, labels: np.ndarray, max_per_example: int, max_strength: float
) -> Allocation:
    """Per-example amount and strength from the model's losses.

    difficulty = mean of (the example's loss rank in the set) and (its class's mean loss
    relative to the hardest class), in [0, 1]. counts = round(max × difficulty) (so easy
    examples may get none), strength = max_strength × (0.3 + 0.7 × difficulty).
    """
    n = len(losses)
    if n == 0:
        return Allocation(np.zeros(0, dtype=np.int64), np.zeros(0))
    rank = np.argsort(np.argsort(losses, kind="stable"), kind="stable") / max(1, n - 1)
    class_mean = {int(c): float(losses[labels == c].mean()) for c in np.unique(labels)}
    top = max(class_mean.values()) or 1.0
    per_class = np.array([class_mean[int(c)] / top for c in labels])
    difficulty = np.clip(0.5 * rank + 0.5 * per_class, 0.0, 1.0)
    counts = np.rint(max_per_example * difficulty).astype(np.int64)
    strengths = max_strength * (0.3 + 0.7 * difficulty)
    return Allocation(counts, strengths)
