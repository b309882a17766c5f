"""Self-attention relation distillation (MiniLMv2, Wang et al. 2021).

Usage::

    with capture_qkv(student, layer=3) as s_qkv:
        logits = student(**batch).logits          # the forward fills s_qkv
    with capture_qkv(teacher, layer=5) as t_qkv, torch.no_grad():
        teacher(**batch)
    loss = relation_loss(qkv_tuple(s_qkv), qkv_tuple(t_qkv), batch["attention_mask"],
                         relation_heads=12)

The queries of one layer (all heads concatenated) are split into ``relation_heads`` equal
parts, and each part gives a token-by-token distribution ``softmax(Q Qᵀ / √d)``; the same for
keys and values. The loss is KL(teacher ‖ student) of those distributions, averaged over the
three relations, the relation heads and the real (unpadded) query tokens. Because only
token-by-token matrices are compared, the student's width and head count need not match the
teacher's: each side is split into the same number of relation heads.

Why next to the hidden-state loss: the hidden-state MSE matches what each layer outputs; the
relations match how the last layer mixes tokens, which MiniLM found to carry the teacher's
knowledge with the fewest constraints on the student's shape (its last layer is distilled
from the teacher's last layer).

Head gates (``sec_engine.compression.gates``) are applied to the captured projections, so a
masked head's dimensions drop out of the relations as they would after physical pruning, and
no gradient reaches its weights through this loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.compression.gates import head_gate
from sec_engine.models.arch import layer_views

QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # each (batch, tokens, width)
_NAMES = ("query", "key", "value")
_MASKED = -1e9  # a padded key's score: exp() of it is 0 in float32


@contextlib.contextmanager
def capture_qkv(model: nn.Module, layer: int) -> Iterator[dict[str, torch.Tensor]]:
    """Record encoder layer `layer`'s query, key and value projections during the forward
    passes inside the block (the last one wins), head gates applied."""
    view = layer_views(model)[layer]
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            gate = head_gate(view.attn_out)
            if gate is not None:
                gate = gate.detach()  # AIP's Taylor scores must not see this loss
                shape = output.shape
                heads = output.view(*shape[:-1], gate.numel(), -1) * gate[:, None]
                output = heads.view(shape)
            captured[name] = output

        return record

    handles = [getattr(view, name).register_forward_hook(hook(name)) for name in _NAMES]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def capture_qkv_if(
    model: nn.Module, layer: int | None
) -> contextlib.AbstractContextManager[dict[str, torch.Tensor] | None]:
    """`capture_qkv` of `layer`, or a no-op yielding None when no layer is named (no stage
    distils relations)."""
    return capture_qkv(model, layer) if layer is not None else contextlib.nullcontext()


def qkv_tuple(captured: dict[str, torch.Tensor]) -> QKV:
    """The captured projections in (query, key, value) order."""
    missing = [n for n in _NAMES if n not in captured]
    if missing:
        raise RuntimeError(f"no forward pass recorded the {missing} projections")
    return captured["query"], captured["key"], captured["value"]


def relation_loss(
    student: QKV, teacher: QKV, attention_mask: torch.Tensor, relation_heads: int
) -> torch.Tensor:
    """Mean KL(teacher ‖ student) of the Q-Q, K-K and V-V relations (see module doc)."""
    valid = attention_mask.bool()
    key_pad = ~valid[:, None, None, :]  # (batch, 1, 1, keys)
    query_weight = valid[:, None, :].float()  # (batch, 1, queries)
    denom = query_weight.sum().clamp_min(1.0) * relation_heads
    losses = []
    for s, t in zip(student, teacher, strict=True):
        log_s = _relation_log_probs(s.float(), relation_heads, key_pad)
        log_t = _relation_log_probs(t.detach().float(), relation_heads, key_pad)
        kl = F.kl_div(log_s, log_t, log_target=True, reduction="none").sum(-1)
        losses.append((kl * query_weight).sum() / denom)
    return torch.stack(losses).mean()


def _relation_log_probs(x: torch.Tensor, heads: int, key_pad: torch.Tensor) -> torch.Tensor:
    batch, tokens, width = x.shape
    if width % heads:
        raise ValueError(f"a width of {width} does not split into {heads} relation heads")
    split = x.view(batch, tokens, heads, width // heads).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / math.sqrt(width // heads)
    return F.log_softmax(scores.masked_fill(key_pad, _MASKED), dim=-1)
