"""Head and FFN-neuron gates: masks that leave every shape alone.

Usage::

    masks = StructuredMasks.ones(model)          # 1 = keep, 0 = masked
    masks.heads[0][3] = 0.0                      # mask head 3 of layer 0
    attach_masks(model, masks)                   # the model now behaves as if it were pruned
    ...train / evaluate...
    detach_masks(model)                          # back to the plain model

A gate multiplies the *input* of the attention output projection (the concatenated head
contexts, viewed as ``[..., heads, head_dim]``) and the input of the FFN output projection
(the activated neurons). Gating there is exactly equivalent to removing the head's q/k/v rows
and output-projection columns (or the neuron's FFN rows and columns), which is why the
physically pruned model reproduces the masked one. It also blocks every gradient into a masked
structure, so training with masks attached leaves masked weights untouched.

Gates live as non-persistent buffers on the output Linears (they follow ``.to(device)`` and
never enter ``state_dict``), read by a module-level forward pre-hook. The gate tensors
returned by :func:`attach_masks` are the live ones: editing them in place (``copy_``,
``fill_``) changes the model's behaviour without re-attaching, and giving them
``requires_grad`` makes their gradients the first-order Taylor importance (Michel et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sec_engine.models.arch import layer_views

_GATE = "sec_gate"


@dataclass(frozen=True)
class StructuredMasks:
    """Per-layer head and neuron masks (float tensors of 0/1); one entry per encoder layer."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]

    @classmethod
    def ones(cls, model: nn.Module) -> StructuredMasks:
        """All-keep masks shaped like the model's current layers, on its device."""
        views = layer_views(model)
        dev = views[0].query.weight.device
        return cls(
            heads=[torch.ones(v.num_heads, device=dev) for v in views],
            neurons=[torch.ones(v.ffn_width, device=dev) for v in views],
        )

    def head_sparsity(self) -> float:
        """Fraction of the heads listed here that are masked."""
        return _zero_fraction(self.heads)

    def neuron_sparsity(self) -> float:
        return _zero_fraction(self.neurons)

    def num_heads_kept(self) -> list[int]:
        return [int((m > 0).sum()) for m in self.heads]

    def num_neurons_kept(self) -> list[int]:
        return [int((m > 0).sum()) for m in self.neurons]


@dataclass(frozen=True)
class StructuredScores:
    """Per-layer importance scores: higher means more important. Same layout as the masks."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]


def _zero_fraction(tensors: list[torch.Tensor]) -> float:
    total = sum(t.numel() for t in tensors)
    zeros = sum(int((t <= 0).sum()) for t in tensors)
    return zeros / total if total else 0.0


def attach_masks(
    model: nn.Module, masks: StructuredMasks, *, requires_grad: bool = False, copy: bool = True
) -> StructuredMasks:
    """Gate the model with ``masks`` (replacing any gates already attached).

    Returns the live gate tensors: copies of ``masks`` on the model's device (float32), or,
    with ``copy=False``, the very tensors given (which must already be float32 on that device).
    """
    detach_masks(model)
    views = layer_views(model)
    if len(masks.heads) != len(views) or len(masks.neurons) != len(views):
        raise ValueError(f"masks cover {len(masks.heads)} layers, the model has {len(views)}")
    live_heads, live_neurons = [], []
    for view, head_mask, neuron_mask in zip(views, masks.heads, masks.neurons, strict=True):
        if head_mask.numel() != view.num_heads or neuron_mask.numel() != view.ffn_width:
            raise ValueError(
                f"layer {view.index}: masks of size {head_mask.numel()}/{neuron_mask.numel()} "
                f"for {view.num_heads} heads / {view.ffn_width} neurons"
            )
        live_heads.append(_attach(view.attn_out, head_mask, requires_grad, copy))
        live_neurons.append(_attach(view.ffn_out, neuron_mask, requires_grad, copy))
    return StructuredMasks(heads=live_heads, neurons=live_neurons)


def detach_masks(model: nn.Module) -> None:
    """Remove every gate this module attached; a no-op on an ungated model."""
    # Hooks are found by identity rather than through stored handles, so this also works on a
    # copy.deepcopy of a gated model (a copied handle would point at the original's hooks).
    for module in model.modules():
        for hook_id, hook in list(module._forward_pre_hooks.items()):
            if hook is _gate_input:
                del module._forward_pre_hooks[hook_id]
        module._buffers.pop(_GATE, None)


def attached_masks(model: nn.Module) -> StructuredMasks | None:
    """The live gates, or None when the model carries none."""
    views = layer_views(model)
    heads = [v.attn_out._buffers.get(_GATE) for v in views]
    neurons = [v.ffn_out._buffers.get(_GATE) for v in views]
    if any(t is None for t in heads) or any(t is None for t in neurons):
        return None
    return StructuredMasks(
        heads=[t for t in heads if t is not None], neurons=[t for t in neurons if t is not None]
    )


def head_gate(attn_out: nn.Linear) -> torch.Tensor | None:
    """The live head gate on a layer's attention output projection, or None when ungated."""
    return attn_out._buffers.get(_GATE)


def _attach(linear: nn.Linear, mask: torch.Tensor, requires_grad: bool, copy: bool) -> torch.Tensor:
    if copy:
        gate = mask.detach().to(device=linear.weight.device, dtype=torch.float32).clone()
        gate.requires_grad_(requires_grad)
    else:
        if mask.dtype != torch.float32 or mask.device != linear.weight.device:
            raise ValueError("copy=False needs float32 masks on the model's device")
        gate = mask
    linear.register_buffer(_GATE, gate, persistent=False)
    linear.register_forward_pre_hook(_gate_input)
    return gate


def _gate_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    gate = module._buffers[_GATE]
    assert gate is not None
    x = args[0]
    # [..., groups * group_width] -> [..., groups, group_width]: one gate per head (group
    # width head_dim) or per neuron (group width 1).
    grouped = x.unflatten(-1, (gate.numel(), -1)) * gate.to(x.dtype).unsqueeze(-1)
    return (grouped.flatten(-2), *args[1:])
