from __future__ import annotations

import pytest
import torch
from torch import nn

from sec_engine.errors import ModelLoadError
from sec_engine.models.arch import (
    describe,
    get_layers,
    kept_original_heads,
    layer_views,
    original_head_dim,
    set_layers,
)

from .tiny_models import build_tiny, make_inputs

pytestmark = pytest.mark.unit

_EXPECTED = {
    "bert": ("bert", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
    "roberta": ("bert", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
    "distilbert": ("distilbert", "n_layers", "n_heads", "hidden_dim"),
    "mpnet": ("mpnet", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
}


def test_describe_recognises_family_and_config_names(arch: str) -> None:
    info = describe(build_tiny(arch))
    assert (info.family, info.num_layers_attr, info.num_heads_attr, info.ffn_width_attr) == (
        _EXPECTED[arch]
    )


def test_layer_views_expose_live_linears(arch: str) -> None:
    model = build_tiny(arch)
    views = layer_views(model)
    assert len(views) == 3
    assert original_head_dim(model) == 8
    for view in views:
        assert (view.num_heads, view.head_dim, view.ffn_width) == (4, 8, 64)
        assert view.query.weight.shape == (32, 32)
        assert view.attn_out.in_features == 32
        assert view.ffn_out.in_features == 64
        assert torch.equal(kept_original_heads(view), torch.arange(4))
    # live references: the view's Linear is the one inside the model
    params = {id(p) for p in model.parameters()}
    assert id(views[0].ffn_in.weight) in params


def test_set_layers_updates_config_and_runs(arch: str) -> None:
    model = build_tiny(arch)
    layers = get_layers(model)
    set_layers(model, nn.ModuleList([layers[0], layers[2]]))
    assert len(get_layers(model)) == 2
    info = describe(model)
    assert getattr(model.config, info.num_layers_attr) == 2
    out = model(**make_inputs(arch, pair=False), output_hidden_states=True)
    assert len(out.hidden_states) == 3


def test_unsupported_model_is_refused() -> None:
    with pytest.raises(ModelLoadError):
        describe(nn.Sequential(nn.Linear(2, 2)))
