from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from sec_engine.compression import (
    StructuredMasks,
    attach_masks,
    make_student,
    prepare_qat,
    prune_structured,
    save_pruned_pretrained,
)
from sec_engine.models.arch import describe, layer_views

from .tiny_models import build_tiny, make_inputs

pytestmark = pytest.mark.unit


def _reload_matches(model: torch.nn.Module, arch: str, path: Path) -> Any:
    loaded: Any = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        for pair in (False, True):
            inputs = make_inputs(arch, pair=pair)
            torch.testing.assert_close(
                loaded(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=1e-5
            )
    return loaded


def test_pruned_heads_are_zero_padded(arch: str, tmp_path: Path) -> None:
    model = build_tiny(arch)
    masks = StructuredMasks.ones(model)
    masks.heads[0][[1, 2]] = 0
    masks.neurons[1][:20] = 0
    masks.neurons[2][:8] = 0
    prune_structured(model, masks)
    info = save_pruned_pretrained(model, tmp_path)
    assert info["format"] == "zero_padded"
    assert info["heads_per_layer"] == [2, 4, 4]
    assert info["ffn_width_per_layer"] == [64, 44, 56]
    assert info["zero_padded_heads"] == 2
    assert info["zero_padded_neurons"] == 20 + 8
    loaded = _reload_matches(model, arch, tmp_path)
    view = layer_views(loaded)[0]
    assert view.num_heads == 4
    assert torch.count_nonzero(view.query.weight[8:24]) == 0  # original heads 1 and 2


def test_one_ffn_width_is_expressed_in_config(arch: str, tmp_path: Path) -> None:
    model = build_tiny(arch)
    (tmp_path / "full").mkdir()
    model.save_pretrained(tmp_path / "full")
    masks = StructuredMasks.ones(model)
    for neurons in masks.neurons:
        neurons[:24] = 0
    prune_structured(model, masks)
    info = save_pruned_pretrained(model, tmp_path / "pruned")
    assert info["format"] == "config"
    assert info["config_ffn_width"] == 40
    loaded = _reload_matches(model, arch, tmp_path / "pruned")
    assert getattr(loaded.config, describe(loaded).ffn_width_attr) == 40
    full = (tmp_path / "full" / "model.safetensors").stat().st_size
    pruned = (tmp_path / "pruned" / "model.safetensors").stat().st_size
    assert pruned < full
    # the in-memory model keeps its own (unchanged) config object
    assert getattr(model.config, describe(model).ffn_width_attr) == 64


def test_student_with_pruned_ffn_round_trips(tmp_path: Path) -> None:
    student, _ = make_student(build_tiny("mpnet", num_layers=4), num_layers=2)
    masks = StructuredMasks.ones(student)
    masks.heads[1][0] = 0
    prune_structured(student, masks)
    info = save_pruned_pretrained(student, tmp_path)
    assert info["num_layers"] == 2
    loaded = _reload_matches(student, "mpnet", tmp_path)
    assert loaded.config.num_hidden_layers == 2


def test_gated_or_qat_models_are_refused(tmp_path: Path) -> None:
    model = build_tiny("bert")
    attach_masks(model, StructuredMasks.ones(model))
    with pytest.raises(ValueError, match="prune_structured"):
        save_pruned_pretrained(model, tmp_path)
    model = build_tiny("bert")
    prepare_qat(model)
    with pytest.raises(ValueError, match="strip_qat"):
        save_pruned_pretrained(model, tmp_path)
