"""Save a structurally pruned model so plain ``from_pretrained`` loads it.

Usage::

    info = save_pruned_pretrained(model, out_dir, tokenizer=tokenizer)
    # later, anywhere, without this project:
    AutoModelForSequenceClassification.from_pretrained(out_dir)   # same logits

transformers 5.x builds every layer from one config and derives a head's width as
``hidden_size / num_attention_heads`` (docs/DESIGN_NOTES.md, library constraints), so a config can express dropped layers
and one FFN width shared by all layers, but never a removed head (fewer heads of the same
width would need a smaller ``hidden_size``). So:

- no head removed and one FFN width everywhere -> the config says so
  (``intermediate_size`` / ``hidden_dim``), the checkpoint is genuinely smaller;
- otherwise -> every layer is padded back with zeros to the config's head count (at each
  surviving head's original position, which MPNet's per-head position bias needs) and to the
  widest layer's FFN width, which the config then states. A zero head (q = k = v = 0, and
  its output-projection columns 0) contributes nothing, nor does a zero neuron, so the
  logits are unchanged; the file is larger than the pruned model in memory.

The returned dict describes what was done, for the artifact manifest.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sec_engine.compression.gates import attached_masks
from sec_engine.compression.qat import FakeQuantLinear
from sec_engine.models.arch import (
    LayerView,
    describe,
    kept_original_heads,
    layer_views,
    original_head_dim,
)


def save_pruned_pretrained(
    model: nn.Module, out_dir: str | os.PathLike[str], *, tokenizer: Any | None = None
) -> dict[str, Any]:
    """Write ``model`` (and ``tokenizer``) as a plain HF checkpoint; return a manifest entry.

    Refuses a model that still carries gates (they are not saved: call ``prune_structured``)
    or fake-quantized Linears (call ``strip_qat``), so what loads is what was evaluated.
    """
    if attached_masks(model) is not None:
        raise ValueError("the model carries pruning gates: prune_structured() it before saving")
    if any(isinstance(m, FakeQuantLinear) for m in model.modules()):
        raise ValueError("the model is prepared for QAT: strip_qat() it before saving")
    info = describe(model)
    config: Any = model.config
    views = layer_views(model)
    full_heads = int(getattr(config, info.num_heads_attr))
    heads = [v.num_heads for v in views]
    widths = [v.ffn_width for v in views]
    target_width = max(widths)
    padded_heads = sum(full_heads - h for h in heads)
    padded_neurons = sum(target_width - w for w in widths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    new_config = copy.deepcopy(config)
    setattr(new_config, info.ffn_width_attr, target_width)
    if padded_heads or padded_neurons:
        padded = _zero_padded_copy(model, views, new_config, full_heads, target_width)
        padded.save_pretrained(out)
    else:
        # Same tensors, truthful config: swap it in for the save only.
        try:
            model.config = new_config
            model.save_pretrained(out)  # type: ignore[operator]
        finally:
            model.config = config
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return {
        "format": "zero_padded" if (padded_heads or padded_neurons) else "config",
        "num_layers": len(views),
        "heads_per_layer": heads,
        "ffn_width_per_layer": widths,
        "config_num_heads": full_heads,
        "config_ffn_width": target_width,
        "zero_padded_heads": padded_heads,
        "zero_padded_neurons": padded_neurons,
        "note": (
            "pruned heads/neurons are stored as zeros at full shape; the ONNX file holds the "
            "pruned structure"
            if (padded_heads or padded_neurons)
            else "structure fully expressed by config.json"
        ),
    }


def _zero_padded_copy(
    model: nn.Module, views: list[LayerView], config: Any, full_heads: int, width: int
) -> Any:
    """A fresh model of the config's full shapes holding the pruned weights, zeros elsewhere."""
    names = {id(m): name for name, m in model.named_modules()}
    state = dict(model.state_dict())
    d = original_head_dim(model)
    for view in views:
        dev = view.query.weight.device
        kept = kept_original_heads(view).to(dev)
        rows = (kept[:, None] * d + torch.arange(d, device=dev)).flatten()
        for lin in (view.query, view.key, view.value):
            _pad_into(state, names[id(lin)], lin, rows, full_heads * d, dim=0)
        _pad_into(state, names[id(view.attn_out)], view.attn_out, rows, full_heads * d, dim=1)
        neurons = torch.arange(view.ffn_width, device=dev)
        _pad_into(state, names[id(view.ffn_in)], view.ffn_in, neurons, width, dim=0)
        _pad_into(state, names[id(view.ffn_out)], view.ffn_out, neurons, width, dim=1)
    dtype = next(model.parameters()).dtype
    fresh: nn.Module = type(model)(config).to(dtype)
    fresh.load_state_dict(state, strict=True)
    return fresh


def _pad_into(
    state: dict[str, torch.Tensor],
    name: str,
    linear: nn.Linear,
    index: torch.Tensor,
    size: int,
    *,
    dim: int,
) -> None:
    weight = linear.weight.detach()
    shape = list(weight.shape)
    shape[dim] = size
    padded = weight.new_zeros(shape)
    padded.index_copy_(dim, index, weight)
    state[f"{name}.weight"] = padded
    if dim == 0 and linear.bias is not None:
        bias = linear.bias.detach()
        state[f"{name}.bias"] = bias.new_zeros(size).index_copy_(0, index, bias)
