"""Vocabulary pruning: keep only the embedding rows of tokens the task's data uses.

Usage::

    vmap = prune_vocabulary(model, used_ids, special_token_ids=tok.all_special_ids,
                            unk_token_id=tok.unk_token_id)      # shrinks the embedding in place
    new_ids = remap_input_ids(batch["input_ids"], vmap)          # old tokenizer -> new ids
    write_pruned_tokenizer(tok, vmap, out_dir)                   # WordPiece only, see below

The kept ids stay in their old order, and every id up to the padding id is kept, so the
padding id maps to itself: RoBERTa and MPNet derive position ids from it (MPNet hard-codes 1).
Dropped tokens map to the unknown token.

Tokenizer: for WordPiece tokenizers (BERT, DistilBERT, MPNet, MiniLM) a new tokenizer that
emits the new ids directly is written. It tokenizes every word of the task's data exactly as
before (greedy longest match only ever picks tokens that were used), while an unseen word may
be split into kept sub-words where the remap would give [UNK]. For BPE / Unigram tokenizers
(RoBERTa, XLM-R) merges pass through intermediate tokens the data never shows, so a reduced
vocabulary cannot reproduce the tokenization; :func:`write_pruned_tokenizer` raises
``NotImplementedError`` for them and callers keep the original tokenizer plus
:func:`remap_input_ids`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

_CONFIG_TOKEN_IDS = ("bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")


@dataclass(frozen=True)
class VocabMap:
    old_to_new: torch.Tensor  # long, one entry per old id; dropped ids -> unk_id
    new_to_old: torch.Tensor  # long, one entry per kept id
    unk_id: int  # the unknown token's new id

    @property
    def new_size(self) -> int:
        return int(self.new_to_old.numel())


def prune_vocabulary(
    model: Any,
    used_token_ids: Iterable[int] | torch.Tensor,
    *,
    special_token_ids: Iterable[int],
    unk_token_id: int,
) -> VocabMap:
    """Shrink the input embedding to the used + special tokens, in place; update the config."""
    old: nn.Embedding = model.get_input_embeddings()
    old_size = old.num_embeddings
    ids = (
        used_token_ids.flatten().tolist()
        if isinstance(used_token_ids, torch.Tensor)
        else list(used_token_ids)
    )
    pad = getattr(model.config, "pad_token_id", None)
    keep_set = {int(i) for i in ids} | {int(i) for i in special_token_ids} | {int(unk_token_id)}
    if pad is not None:
        keep_set |= set(range(int(pad) + 1))
    if min(keep_set) < 0 or max(keep_set) >= old_size:
        raise ValueError(f"token ids must be in [0, {old_size})")
    dev = old.weight.device
    new_to_old = torch.tensor(sorted(keep_set), dtype=torch.long, device=dev)
    new_unk = int((new_to_old == unk_token_id).nonzero()[0, 0])
    old_to_new = torch.full((old_size,), new_unk, dtype=torch.long, device=dev)
    old_to_new[new_to_old] = torch.arange(new_to_old.numel(), device=dev)

    new = nn.Embedding(
        new_to_old.numel(),
        old.embedding_dim,
        padding_idx=None if old.padding_idx is None else int(old_to_new[old.padding_idx]),
        device=dev,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.index_select(0, new_to_old))
    new.weight.requires_grad_(old.weight.requires_grad)
    model.set_input_embeddings(new)
    model.config.vocab_size = new_to_old.numel()
    for attr in _CONFIG_TOKEN_IDS:
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and 0 <= value < old_size:
            setattr(model.config, attr, int(old_to_new[value]))
    return VocabMap(old_to_new=old_to_new, new_to_old=new_to_old, unk_id=new_unk)


def remap_input_ids(input_ids: torch.Tensor, vocab_map: VocabMap) -> torch.Tensor:
    """Translate ids from the original tokenizer to the pruned vocabulary."""
    return vocab_map.old_to_new.to(input_ids.device)[input_ids]


def write_pruned_tokenizer(
    tokenizer: Any, vocab_map: VocabMap, out_dir: str | os.PathLike[str]
) -> Any:
    """Write a tokenizer emitting the new ids (WordPiece only) and return it, loaded.

    Raises NotImplementedError for other tokenizer models (see the module docstring).
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model_type = spec["model"]["type"]
    if model_type != "WordPiece":
        raise NotImplementedError(
            f"vocabulary pruning can rewrite WordPiece tokenizers only, not {model_type}; "
            "keep the original tokenizer and use remap_input_ids"
        )
    old_to_new = vocab_map.old_to_new.cpu().tolist()
    kept = {int(i) for i in vocab_map.new_to_old.cpu().tolist()}

    def new_id(old: int) -> int:
        if old not in kept:
            raise ValueError(f"special token id {old} was not kept")
        return int(old_to_new[old])

    spec["model"]["vocab"] = {t: new_id(i) for t, i in spec["model"]["vocab"].items() if i in kept}
    spec["added_tokens"] = [
        {**tok, "id": new_id(tok["id"])} for tok in spec["added_tokens"] if tok["id"] in kept
    ]
    post = spec.get("post_processor") or {}
    for entry in (post.get("special_tokens") or {}).values():  # TemplateProcessing
        entry["ids"] = [new_id(i) for i in entry["ids"]]
    for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
        if isinstance(post.get(key), list):
            post[key] = [post[key][0], new_id(post[key][1])]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id(spec["padding"]["pad_id"])

    backend = Tokenizer.from_str(json.dumps(spec))
    specials = {
        name: getattr(tokenizer, name)
        for name in ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token")
        if getattr(tokenizer, name, None) is not None
    }
    pruned = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        model_max_length=tokenizer.model_max_length,
        model_input_names=list(tokenizer.model_input_names),
        **specials,
    )
    pruned.save_pretrained(Path(out_dir))
    return pruned
