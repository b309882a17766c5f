"""SQD ops: a layer-dropped student, and the distillation losses of L_SQD = L_Q + α L_KD.

Usage::

    student, layer_map = make_student(teacher, num_layers=3, strategy="uniform")
    t_out = teacher(**batch, output_hidden_states=True)     # under torch.no_grad()
    s_out = student(**batch, output_hidden_states=True)
    kd = kd_logit_loss(s_out.logits, t_out.logits, temperature=2.0)
    hid = hidden_state_loss(s_out.hidden_states, t_out.hidden_states, layer_map,
                            attention_mask=batch["attention_mask"])
    loss = task_loss + alpha * (kd + hidden_weight * hid)

Quantization-aware training is in :mod:`sec_engine.compression.qat` and vocabulary pruning
in :mod:`sec_engine.compression.vocab`; both are re-exported here and from the package.

``layer_map`` maps a student ``hidden_states`` index to the teacher's (index 0 is the
embedding output, index i the output of layer i), so the hidden-state loss compares states
at matching depth:

- ``uniform`` copies teacher layers ``floor(i·L/k)`` (DistilBERT's "one layer out of two"
  for k = L/2) and maps student depth j to teacher depth ``round(j·L/k)`` (TinyBERT's uniform
  mapping, so the last student state is distilled from the last teacher state);
- ``first`` keeps the bottom k layers and maps j -> j;
- ``last`` keeps the top k layers and maps j -> L-k+j (j >= 1), 0 -> 0.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.compression.qat import FakeQuantLinear, prepare_qat, strip_qat
from sec_engine.compression.vocab import (
    VocabMap,
    prune_vocabulary,
    remap_input_ids,
    write_pruned_tokenizer,
)
from sec_engine.models.arch import get_layers, set_layers

__all__ = [
    "FakeQuantLinear",
    "LayerMap",
    "Strategy",
    "VocabMap",
    "hidden_state_loss",
    "kd_logit_loss",
    "make_hidden_projection",
    "make_student",
    "prepare_qat",
    "prune_vocabulary",
    "remap_input_ids",
    "strip_qat",
    "student_layer_indices",
    "write_pruned_tokenizer",
]

Strategy = Literal["uniform", "first", "last"]
LayerMap = dict[int, int]  # student hidden_states index -> teacher hidden_states index


def student_layer_indices(
    teacher_layers: int, num_layers: int, strategy: Strategy
) -> tuple[list[int], LayerMap]:
    """Which teacher layers initialise the student, and the hidden-state map (see module doc)."""
    n, k = teacher_layers, num_layers
    if not 1 <= k <= n:
        raise ValueError(f"student needs 1..{n} layers, got {k}")
    if strategy == "uniform":
        picked = [(i * n) // k for i in range(k)]
        mapping = {j: round(j * n / k) for j in range(k + 1)}
    elif strategy == "first":
        picked = list(range(k))
        mapping = {j: j for j in range(k + 1)}
    elif strategy == "last":
        picked = list(range(n - k, n))
        mapping = {0: 0, **{j: n - k + j for j in range(1, k + 1)}}
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return picked, mapping


def make_student(
    teacher: nn.Module, num_layers: int, strategy: Strategy = "uniform"
) -> tuple[Any, LayerMap]:
    """A copy of ``teacher`` keeping ``num_layers`` of its encoder layers; the teacher is
    untouched. Embeddings, pooler and classifier are copied whole; the config's layer count
    is updated, so ``save_pretrained`` / ``from_pretrained`` round-trips."""
    picked, mapping = student_layer_indices(len(get_layers(teacher)), num_layers, strategy)
    student: Any = copy.deepcopy(teacher)
    old = get_layers(student)
    set_layers(student, nn.ModuleList([old[i] for i in picked]))
    for position, layer in enumerate(get_layers(student)):
        # Cache bookkeeping (BERT's layer_idx) must follow the new positions.
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                setattr(module, "layer_idx", position)  # noqa: B010 (typed as Tensor | Module)
    return student, mapping


def kd_logit_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher ‖ student) on temperature-softened distributions, scaled by T² (Hinton et al.
    2015) so its gradient magnitude does not shrink as T grows. Computed in float32."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def make_hidden_projection(student_width: int, teacher_width: int) -> nn.Linear | None:
    """A learned student->teacher projection (TinyBERT's W_h), or None when widths match."""
    if student_width == teacher_width:
        return None
    return nn.Linear(student_width, teacher_width)


def hidden_state_loss(
    student_hidden_states: Sequence[torch.Tensor],
    teacher_hidden_states: Sequence[torch.Tensor],
    layer_map: Mapping[int, int],
    *,
    attention_mask: torch.Tensor | None = None,
    projection: nn.Module | None = None,
) -> torch.Tensor:
    """Mean over mapped layer pairs of the MSE between hidden states, padding excluded."""
    if not layer_map:
        raise ValueError("layer_map is empty")
    losses = []
    for s_idx, t_idx in layer_map.items():
        s = student_hidden_states[s_idx].float()
        t = teacher_hidden_states[t_idx].detach().float()
        if projection is not None:
            s = projection(s)
        if s.shape != t.shape:
            raise ValueError(
                f"hidden states {s_idx}->{t_idx} differ in shape {tuple(s.shape)} vs "
                f"{tuple(t.shape)}; pass a projection (make_hidden_projection)"
            )
        per_token = (s - t).pow(2).mean(dim=-1)
        if attention_mask is None:
            losses.append(per_token.mean())
        else:
            mask = attention_mask.to(per_token.dtype)
            losses.append((per_token * mask).sum() / mask.sum().clamp_min(1.0))
    return torch.stack(losses).mean()
