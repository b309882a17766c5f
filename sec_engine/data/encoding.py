"""Tokenising examples once, and batching them with padding to the longest row in the batch.

Padding to the batch's longest sequence (not to max_seq_len) is where most CPU speed comes
from on short texts (docs/DESIGN_NOTES.md, library constraints), so training and evaluation both do it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sec_engine.data.splits import Example

Features = dict[str, list[int]]


@dataclass(frozen=True)
class Batch:
    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask[, token_type_ids]
    index: list[int]  # positions of these rows in the encoded list


def model_input_names(tokenizer: Any) -> list[str]:
    names = list(getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"]))
    return [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in names]


def encode(tokenizer: Any, examples: Sequence[Example], max_len: int) -> list[Features]:
    """Token ids per example (no padding), truncated to max_len."""
    if not examples:
        return []
    texts = [e.text for e in examples]
    pairs = [e.text_pair or "" for e in examples] if examples[0].text_pair is not None else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_len, padding=False)
    names = model_input_names(tokenizer)
    return [{n: list(enc[n][i]) for n in names} for i in range(len(examples))]


def collate(features: Sequence[Features], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(f["input_ids"]) for f in features)
    out: dict[str, torch.Tensor] = {}
    for name in features[0]:
        fill = pad_id if name == "input_ids" else 0
        rows = [f[name] + [fill] * (width - len(f[name])) for f in features]
        out[name] = torch.tensor(rows, dtype=torch.long)
    return out


def pad_id(tokenizer: Any) -> int:
    value = getattr(tokenizer, "pad_token_id", None)
    return int(value) if value is not None else 0


def iter_batches(
    features: Sequence[Features],
    batch_size: int,
    pad: int,
    *,
    rng: np.random.Generator | None = None,
    by_length: bool = False,
) -> Iterator[Batch]:
    """Shuffled batches when `rng` is given; length-sorted when `by_length` (inference only)."""
    order = list(range(len(features)))
    if rng is not None:
        order = [int(i) for i in rng.permutation(len(features))]
    elif by_length:
        order.sort(key=lambda i: len(features[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        yield Batch(collate([features[i] for i in index], pad), index)


GROUP_BATCHES = 50  # batches per length-sorted chunk in length_grouped_batches


def length_grouped_batches(
    features: Sequence[Features],
    batch_size: int,
    pad: int,
    rng: np.random.Generator,
    *,
    group_batches: int = GROUP_BATCHES,
) -> Iterator[Batch]:
    """One shuffled epoch in which each batch holds rows of similar length.

    Rows are shuffled, cut into chunks of `group_batches` batches, sorted by length inside each
    chunk and batched; the batches are then shuffled (HF's ``group_by_length``). Every row
    appears once per epoch and batches stay random in content, but a batch no longer pads
    its short rows to the one long row it happened to draw: on short texts with a few long
    ones that is most of the training compute saved.
    """
    order = [int(i) for i in rng.permutation(len(features))]
    chunk = max(1, batch_size * group_batches)
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(features[i]["input_ids"]))
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    for b in rng.permutation(len(batches)):
        index = batches[int(b)]
        yield Batch(collate([features[i] for i in index], pad), index)


def fixed_length_batch(
    tokenizer: Any, examples: Sequence[Example], batch_size: int, seq_len: int
) -> dict[str, torch.Tensor]:
    """A latency-benchmark batch: real texts, cycled to `batch_size`, padded to `seq_len`."""
    if not examples:
        raise ValueError("latency inputs need at least one example")
    chosen = [examples[i % len(examples)] for i in range(batch_size)]
    texts = [e.text for e in chosen]
    pairs = [e.text_pair or "" for e in chosen] if chosen[0].text_pair is not None else None
    enc = tokenizer(
        texts, pairs, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt"
    )
    return {n: enc[n] for n in model_input_names(tokenizer)}
