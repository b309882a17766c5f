"""Tiny random-init encoders of every supported family, and matching inputs.

Hidden 32, 4 heads (head_dim 8), FFN 64, vocab 100, 3 layers: each model builds in
milliseconds, so every op is checked on BERT, RoBERTa, DistilBERT and MPNet.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

VOCAB = 100
ARCHS = ("bert", "roberta", "distilbert", "mpnet")
_COMMON: dict[str, Any] = {"vocab_size": VOCAB, "max_position_embeddings": 64, "num_labels": 3}


def tiny_config(arch: str, num_layers: int = 3) -> PretrainedConfig:
    if arch == "distilbert":
        return DistilBertConfig(
            dim=32, n_layers=num_layers, n_heads=4, hidden_dim=64, pad_token_id=0, **_COMMON
        )
    kwargs: dict[str, Any] = {
        "hidden_size": 32,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        **_COMMON,
    }
    if arch == "bert":
        return BertConfig(pad_token_id=0, **kwargs)
    if arch == "roberta":
        return RobertaConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **kwargs)
    if arch == "mpnet":
        return MPNetConfig(pad_token_id=1, bos_token_id=0, eos_token_id=2, **kwargs)
    raise ValueError(arch)


_CLASSES: dict[str, type[PreTrainedModel]] = {
    "bert": BertForSequenceClassification,
    "roberta": RobertaForSequenceClassification,
    "distilbert": DistilBertForSequenceClassification,
    "mpnet": MPNetForSequenceClassification,
}


def build_tiny(arch: str, num_layers: int = 3, seed: int = 0) -> Any:
    """A random-init classifier in eval mode (typed Any: tests reach into HF submodules)."""
    torch.manual_seed(seed)
    model: Any = _CLASSES[arch](tiny_config(arch, num_layers))
    return model.eval()


def make_inputs(arch: str, pair: bool, batch: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    """Token ids with padding at the end of some rows; pairs get a separator and segment ids."""
    gen = torch.Generator().manual_seed(seed)
    pad = 1 if arch in ("roberta", "mpnet") else 0
    seq = 12
    ids = torch.randint(5, VOCAB, (batch, seq), generator=gen)
    ids[:, 0] = 0 if pad == 1 else 2  # a CLS-like first token
    types = torch.zeros_like(ids)
    if pair:
        ids[:, 6] = 3  # separator between the two segments
        types[:, 7:] = 1
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # row 1 padded
    ids[mask == 0] = pad
    out = {"input_ids": ids, "attention_mask": mask}
    if pair and arch == "bert":
        out["token_type_ids"] = types
    return out
