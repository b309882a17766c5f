"""AIP ops: structured importance, selection, physical pruning and the group-sparsity penalty.

Usage (one pruning step of a training loop)::

    scores = taylor_importance(model, batches, loss_fn)        # or magnitude_importance(model)
    masks = select_structures(scores, head_sparsity=0.3, neuron_sparsity=0.3)
    attach_masks(model, masks)           # evaluate / fine-tune the masked model (same shapes)
    report = prune_structured(model, masks)   # slice the Linears for real; same outputs
    penalty = group_sparsity_penalty(model)   # differentiable R_model term (λ2)

``loss_fn(model, batch) -> scalar tensor`` is the caller's: it moves the batch to the device
and runs the forward pass, so these ops know nothing about batch layout.

Sparsities here are fractions of the structures that exist *now* in ``scores``; an iterative
schedule that prunes physically between steps converts its target against the original
counts itself. Unstructured magnitude pruning and sparse storage are in
:mod:`sec_engine.compression.sparse`; masks and gates in :mod:`sec_engine.compression.gates`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import nn

from sec_engine.compression.gates import (
    StructuredMasks,
    StructuredScores,
    attach_masks,
    attached_masks,
    detach_masks,
)
from sec_engine.models.arch import LayerView, kept_original_heads, layer_views, sync_head_attributes

B = TypeVar("B")
Scope = Literal["global", "layer"]
_EPS = 1e-12


# ----------------------------------------------------------------------------- importance


def taylor_importance(
    model: nn.Module,
    batches: Iterable[B],
    loss_fn: Callable[[nn.Module, B], torch.Tensor],
    *,
    masks: StructuredMasks | None = None,
    max_batches: int | None = None,
) -> StructuredScores:
    """First-order Taylor importance of every head and FFN neuron (Michel et al. 2019).

    Each structure gets a gate ξ (1, or its value in ``masks``); its score is the mean over
    batches of ``|∂L/∂ξ|``, the loss change a first-order expansion predicts for removing it.
    The model runs in eval mode (no dropout noise in the scores), only the gates receive
    gradients (parameter ``.grad`` is untouched), and gates already attached are restored
    afterwards (the same tensors, so a caller's live handles stay valid). Scores of masked
    structures (ξ = 0) estimate the gain of re-enabling them.
    """
    previous = attached_masks(model)
    start = masks if masks is not None else previous
    if start is None:
        start = StructuredMasks.ones(model)
    was_training = model.training
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grad_flags:
            p.requires_grad_(False)
        gates = attach_masks(model, start, requires_grad=True)
        flat = [*gates.heads, *gates.neurons]
        totals = [torch.zeros_like(g) for g in flat]
        seen = 0
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            loss = loss_fn(model, batch)
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
            for total, grad in zip(totals, grads, strict=True):
                if grad is not None:
                    total += grad.detach().abs()
            seen += 1
        if seen == 0:
            raise ValueError("taylor_importance needs at least one batch")
        n = len(gates.heads)
        return StructuredScores(
            heads=[t / seen for t in totals[:n]], neurons=[t / seen for t in totals[n:]]
        )
    finally:
        detach_masks(model)
        if previous is not None:
            attach_masks(model, previous, copy=False)
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        model.train(was_training)


def magnitude_importance(model: nn.Module) -> StructuredScores:
    """Weight-magnitude fallback: the L2 norm of each head's / neuron's weight group."""
    with torch.no_grad():
        norms = [_group_norms(v) for v in layer_views(model)]
    return StructuredScores(heads=[h for h, _ in norms], neurons=[n for _, n in norms])


def _group_norms(view: LayerView) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head: q/k/v rows + output-projection columns; per neuron: FFN row + column."""
    h, d = view.num_heads, view.head_dim
    out = view.attn_out.weight
    head_sq = out.reshape(out.shape[0], h, d).pow(2).sum(dim=(0, 2))
    for lin in (view.query, view.key, view.value):
        head_sq = head_sq + lin.weight.reshape(h, d, -1).pow(2).sum(dim=(1, 2))
        if lin.bias is not None:
            head_sq = head_sq + lin.bias.reshape(h, d).pow(2).sum(dim=1)
    neuron_sq = view.ffn_in.weight.pow(2).sum(dim=1) + view.ffn_out.weight.pow(2).sum(dim=0)
    if view.ffn_in.bias is not None:
        neuron_sq = neuron_sq + view.ffn_in.bias.pow(2)
    return (head_sq + _EPS).sqrt(), (neuron_sq + _EPS).sqrt()


# ----------------------------------------------------------------------------- selection


def select_structures(
    scores: StructuredScores,
    *,
    head_sparsity: float,
    neuron_sparsity: float,
    scope: Scope = "global",
    normalize: bool = True,
    min_heads: int = 1,
    min_neurons: int = 4,
) -> StructuredMasks:
    """Masks that drop the lowest-scoring heads / neurons, never emptying a layer.

    ``scope="global"`` ranks all layers together (after dividing each layer's scores by their
    L2 norm when ``normalize``, as Michel et al. do, so that layers with larger gradients do
    not keep everything); ``scope="layer"`` drops the same fraction from every layer, which
    keeps one width for all layers (the shape a plain HF config can express).
    """
    return StructuredMasks(
        heads=_select(scores.heads, head_sparsity, scope, normalize, min_heads),
        neurons=_select(scores.neurons, neuron_sparsity, scope, normalize, min_neurons),
    )


def _select(
    scores: list[torch.Tensor], sparsity: float, scope: Scope, normalize: bool, min_keep: int
) -> list[torch.Tensor]:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    masks = [torch.ones_like(s, dtype=torch.float32) for s in scores]
    floors = [min(max(min_keep, 1), s.numel()) for s in scores]
    if scope == "layer":
        for mask, s, floor in zip(masks, scores, floors, strict=True):
            k = min(round(sparsity * s.numel()), s.numel() - floor)
            if k > 0:
                mask[torch.argsort(s.float(), stable=True)[:k]] = 0.0
        return masks
    ranked = [s.float() / (s.float().norm() + _EPS) if normalize else s.float() for s in scores]
    flat = torch.cat([r.cpu() for r in ranked])
    owner = torch.cat([torch.full((r.numel(),), i) for i, r in enumerate(ranked)])
    local = torch.cat([torch.arange(r.numel()) for r in ranked])
    budget = round(sparsity * flat.numel())
    remaining = [s.numel() for s in scores]
    for j in torch.argsort(flat, stable=True).tolist():
        if budget == 0:
            break
        layer = int(owner[j])
        if remaining[layer] > floors[layer]:
            masks[layer][int(local[j])] = 0.0
            remaining[layer] -= 1
            budget -= 1
    return masks


# ----------------------------------------------------------------------------- pruning


@dataclass(frozen=True)
class PruneReport:
    """Structure counts per layer before and after a physical pruning step."""

    heads_before: list[int]
    heads_after: list[int]
    neurons_before: list[int]
    neurons_after: list[int]


def prune_structured(model: nn.Module, masks: StructuredMasks) -> PruneReport:
    """Physically remove masked heads and neurons by slicing the Linears, in place.

    The result computes exactly what the model with ``masks`` attached computes, with smaller
    weight matrices. Gates are detached first; parameters are replaced, so an optimizer built
    before this call must be rebuilt.
    """
    detach_masks(model)
    views = layer_views(model)
    if len(masks.heads) != len(views) or len(masks.neurons) != len(views):
        raise ValueError(f"masks cover {len(masks.heads)} layers, the model has {len(views)}")
    before_h, after_h, before_n, after_n = [], [], [], []
    for view, head_mask, neuron_mask in zip(views, masks.heads, masks.neurons, strict=True):
        before_h.append(view.num_heads)
        before_n.append(view.ffn_width)
        dev = view.query.weight.device
        keep_heads = torch.nonzero(head_mask.to(dev) > 0).flatten()
        keep_neurons = torch.nonzero(neuron_mask.to(dev) > 0).flatten()
        if keep_heads.numel() == 0 or keep_neurons.numel() == 0:
            raise ValueError(f"layer {view.index}: masks would remove every head or neuron")
        if keep_heads.numel() < view.num_heads:
            original = kept_original_heads(view).to(dev)[keep_heads]
            d = view.head_dim
            rows = (keep_heads[:, None] * d + torch.arange(d, device=dev)).flatten()
            for lin in (view.query, view.key, view.value):
                _slice_linear(lin, rows, dim=0)
            _slice_linear(view.attn_out, rows, dim=1)
            sync_head_attributes(view, original)
        if keep_neurons.numel() < view.ffn_width:
            _slice_linear(view.ffn_in, keep_neurons, dim=0)
            _slice_linear(view.ffn_out, keep_neurons, dim=1)
        after_h.append(view.num_heads)
        after_n.append(view.ffn_width)
    return PruneReport(before_h, after_h, before_n, after_n)


def _slice_linear(linear: nn.Linear, index: torch.Tensor, *, dim: int) -> None:
    """Keep ``index`` along output rows (dim 0) or input columns (dim 1), in place."""
    with torch.no_grad():
        weight = linear.weight.index_select(dim, index).clone()
        linear.weight = nn.Parameter(weight, requires_grad=linear.weight.requires_grad)
        if dim == 0 and linear.bias is not None:
            bias = linear.bias.index_select(0, index).clone()
            linear.bias = nn.Parameter(bias, requires_grad=linear.bias.requires_grad)
    if dim == 0:
        linear.out_features = index.numel()
    else:
        linear.in_features = index.numel()


def group_sparsity_penalty(
    model: nn.Module, *, heads: bool = True, neurons: bool = True
) -> torch.Tensor:
    """Group-lasso over prunable structures: the mean L2 norm of head and neuron groups.

    The mean (not the sum) keeps the term's scale independent of model size, so one λ2 means
    the same pressure on MiniLM and on BERT-base. Differentiable; drives whole groups to zero
    so the importance ranking and the pruning agree.
    """
    parts: list[torch.Tensor] = []
    for view in layer_views(model):
        head_norms, neuron_norms = _group_norms(view)
        if heads:
            parts.append(head_norms)
        if neurons:
            parts.append(neuron_norms)
    if not parts:
        raise ValueError("group_sparsity_penalty needs heads or neurons")
    return torch.cat(parts).mean()


def state_dict_nbytes(model: nn.Module) -> int:
    """Bytes of every tensor in the state dict: what a dense checkpoint stores."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
