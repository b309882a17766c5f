"""Architecture adapter: one view of every Hugging Face encoder the compression ops touch.

Usage::

    from sec_engine.models.arch import describe, layer_views, get_layers, set_layers

    info = describe(model)              # ArchInfo: config attribute names, family name
    for view in layer_views(model):     # one LayerView per encoder layer
        view.query, view.key, view.value, view.attn_out   # nn.Linear
        view.ffn_in, view.ffn_out                         # nn.Linear
        view.num_heads, view.head_dim                     # heads present *now*
    layers = get_layers(model)          # the encoder's nn.ModuleList
    set_layers(model, nn.ModuleList(...))  # also updates config.<num layers attribute>

Families are recognised by module structure (attribute names), not by class name, so any
encoder laid out like BERT (BERT, RoBERTa, ELECTRA, MiniLM, ...), DistilBERT or MPNet works.

How heads are counted at run time (checked in transformers 5.24): every supported attention
reshapes q/k/v with ``view(..., -1, attention_head_size)``, so sliced Linears work in memory.
Two per-module attributes still need care after heads are removed, and
:func:`sync_head_attributes` patches them:

- ``num_attention_heads`` / ``all_head_size`` (BERT, RoBERTa, MPNet) and ``n_heads``
  (DistilBERT). MPNet's attention *uses* ``all_head_size`` to reshape its context, so there it
  is required; elsewhere it keeps the module truthful for code that reads it.
- MPNet computes one relative-position bias with ``config.num_attention_heads`` channels in
  the encoder and hands it to every layer. A layer with fewer heads gets a forward pre-hook
  that selects its surviving heads' channels (indices kept in a non-persistent buffer, so the
  hook follows ``.to(device)`` and ``copy.deepcopy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sec_engine.errors import ModelLoadError

# Per family: attribute paths from one encoder layer to its modules. The first family whose
# paths all resolve to nn.Linear wins.
_FAMILIES: dict[str, dict[str, str]] = {
    "bert": {  # BERT, RoBERTa, ELECTRA, MiniLM, XLM-R ...
        "attention": "attention.self",
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
    "distilbert": {
        "attention": "attention",
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attn_out": "attention.out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    },
    "mpnet": {
        "attention": "attention.attn",
        "query": "attention.attn.q",
        "key": "attention.attn.k",
        "value": "attention.attn.v",
        "attn_out": "attention.attn.o",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
}
# Where the encoder's layer list lives, relative to model.base_model.
_LAYER_LIST_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers")
_KEPT_HEADS_BUFFER = "sec_kept_heads"


@dataclass(frozen=True)
class ArchInfo:
    """What the ops need to know about a model family, and its config attribute names."""

    family: str
    layer_list_path: str
    num_layers_attr: str  # "num_hidden_layers" or "n_layers"
    num_heads_attr: str  # "num_attention_heads" or "n_heads"
    ffn_width_attr: str  # "intermediate_size" or "hidden_dim"
    hidden_size_attr: str  # "hidden_size" or "dim"


@dataclass(frozen=True)
class LayerView:
    """The prunable Linears of one encoder layer. Modules are live references into the model."""

    index: int
    layer: nn.Module
    attention: nn.Module  # the self-attention module that holds the per-module head attributes
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    head_dim: int

    @property
    def num_heads(self) -> int:
        """Heads present now (after any physical pruning), derived from the weight shape."""
        return self.query.out_features // self.head_dim

    @property
    def ffn_width(self) -> int:
        return self.ffn_in.out_features


def _resolve(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _config_attr(config: Any, candidates: Sequence[str]) -> str:
    """The first candidate stored in the config itself (not reached through attribute_map)."""
    stored = config.to_dict()
    for name in candidates:
        if name in stored:
            return name
    raise ModelLoadError(f"config has none of {list(candidates)}; unsupported architecture")


def describe(model: nn.Module) -> ArchInfo:
    """Recognise the model's family from its module structure."""
    base = getattr(model, "base_model", model)
    for path in _LAYER_LIST_PATHS:
        layers = _resolve(base, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            break
    else:
        raise ModelLoadError(
            f"{type(model).__name__}: no encoder layer list found (looked for {_LAYER_LIST_PATHS})"
        )
    first = layers[0]
    for family, paths in _FAMILIES.items():
        if all(
            isinstance(_resolve(first, p), nn.Linear) for k, p in paths.items() if k != "attention"
        ):
            config = getattr(model, "config", None)
            if config is None:
                raise ModelLoadError(f"{type(model).__name__} has no config")
            return ArchInfo(
                family=family,
                layer_list_path=path,
                num_layers_attr=_config_attr(config, ("num_hidden_layers", "n_layers")),
                num_heads_attr=_config_attr(config, ("num_attention_heads", "n_heads")),
                ffn_width_attr=_config_attr(config, ("intermediate_size", "hidden_dim")),
                hidden_size_attr=_config_attr(config, ("hidden_size", "dim")),
            )
    raise ModelLoadError(
        f"{type(model).__name__}: encoder layers are not laid out like BERT, DistilBERT or MPNet"
    )


def original_head_dim(model: nn.Module) -> int:
    """hidden_size / num_heads from the config: pruning never changes a head's width."""
    info = describe(model)
    config: Any = model.config
    return int(getattr(config, info.hidden_size_attr)) // int(getattr(config, info.num_heads_attr))


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer ModuleList (a live reference)."""
    info = describe(model)
    layers = _resolve(getattr(model, "base_model", model), info.layer_list_path)
    assert isinstance(layers, nn.ModuleList)
    return layers


def set_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Replace the encoder's layers and keep the config's layer count in step."""
    info = describe(model)
    base = getattr(model, "base_model", model)
    parent_path, _, attr = info.layer_list_path.rpartition(".")
    parent = _resolve(base, parent_path) if parent_path else base
    setattr(parent, attr, layers)
    setattr(model.config, info.num_layers_attr, len(layers))
    # Some encoders cache the layer count on the container (DistilBERT's Transformer.n_layers).
    if hasattr(parent, "n_layers"):
        setattr(parent, "n_layers", len(layers))  # noqa: B010 (typed as Tensor | Module)


def layer_views(model: nn.Module) -> list[LayerView]:
    """One LayerView per encoder layer, in order."""
    info = describe(model)
    paths = _FAMILIES[info.family]
    head_dim = original_head_dim(model)
    views = []
    for i, layer in enumerate(get_layers(model)):
        mods = {k: _resolve(layer, p) for k, p in paths.items()}
        views.append(LayerView(index=i, layer=layer, head_dim=head_dim, **mods))
    return views


def sync_head_attributes(view: LayerView, kept_original_heads: torch.Tensor | None) -> None:
    """Make the attention module's cached head count match its (sliced) weights.

    ``kept_original_heads`` are the surviving heads' indices in the *unpruned* numbering; they
    are needed only by MPNet's shared relative-position bias (see the module docstring).
    """
    attn = view.attention
    n = view.num_heads
    for attr, value in (
        ("num_attention_heads", n),
        ("n_heads", n),
        ("all_head_size", n * view.head_dim),
    ):
        if hasattr(attn, attr):
            setattr(attn, attr, value)
    if kept_original_heads is None:
        return
    kept = kept_original_heads.to(device=view.query.weight.device, dtype=torch.long)
    # Recorded for every family (hf_save pads heads back at their original positions); only
    # MPNet's forward needs it.
    first_time = _KEPT_HEADS_BUFFER not in attn._buffers
    attn.register_buffer(_KEPT_HEADS_BUFFER, kept, persistent=False)
    if first_time and _uses_shared_position_bias(attn):
        attn.register_forward_pre_hook(_select_position_bias_heads, with_kwargs=True)


def kept_original_heads(view: LayerView) -> torch.Tensor:
    """Original indices of the heads this layer still has (0..n-1 when never pruned)."""
    kept = view.attention._buffers.get(_KEPT_HEADS_BUFFER)
    if kept is not None:
        return kept
    return torch.arange(view.num_heads, device=view.query.weight.device)


def _uses_shared_position_bias(attn: nn.Module) -> bool:
    # MPNet's self-attention takes position_bias as its third positional argument.
    return type(attn).__name__.startswith("MPNet")


def _select_position_bias_heads(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    kept = module._buffers[_KEPT_HEADS_BUFFER]
    assert kept is not None
    if len(args) >= 3 and isinstance(args[2], torch.Tensor):
        args = (*args[:2], args[2].index_select(1, kept), *args[3:])
    elif isinstance(kwargs.get("position_bias"), torch.Tensor):
        kwargs = {**kwargs, "position_bias": kwargs["position_bias"].index_select(1, kept)}
    return args, kwargs
