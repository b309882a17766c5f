from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sec_engine.compression import (
    apply_weight_masks,
    keep_masked_weights_zero,
    load_sparse_safetensors,
    magnitude_prune,
    prunable_weights,
    save_sparse_safetensors,
    weight_sparsity,
)

from .tiny_models import build_tiny, make_inputs

pytestmark = pytest.mark.unit


def test_magnitude_prune_uses_one_global_threshold(arch: str) -> None:
    model = build_tiny(arch)
    embeddings = model.get_input_embeddings().weight.detach().clone()
    before = {k: v.detach().clone() for k, v in prunable_weights(model).items()}
    masks = magnitude_prune(model, 0.8)
    assert set(masks) == set(before)
    assert weight_sparsity(model) == pytest.approx(0.8, abs=1e-3)
    kept = torch.cat([before[k][m].abs() for k, m in masks.items()])
    dropped = torch.cat([before[k][~m].abs() for k, m in masks.items()])
    assert dropped.max() <= kept.min()  # global: nothing kept is smaller than anything dropped
    for name, weight in prunable_weights(model).items():
        assert torch.equal(weight == 0, ~masks[name])
    assert torch.equal(model.get_input_embeddings().weight, embeddings)  # embeddings stay dense
    assert all("classifier" not in name for name in masks)


def test_optimizer_hook_keeps_pruned_weights_at_zero() -> None:
    model = build_tiny("bert").train()
    batch = make_inputs("bert", pair=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    # momentum built before pruning is what would revive zeroed weights
    torch.autograd.backward(model(**batch).logits.sum())
    optimizer.step()
    masks = magnitude_prune(model, 0.5)
    handle = keep_masked_weights_zero(optimizer, model, masks)
    for _ in range(2):
        optimizer.zero_grad()
        torch.autograd.backward(model(**batch).logits.sum())
        optimizer.step()
    assert weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    handle.remove()
    optimizer.zero_grad()
    torch.autograd.backward(model(**batch).logits.sum())
    optimizer.step()
    assert weight_sparsity(model) < 0.4  # without the hook the zeros move
    apply_weight_masks(model, masks)
    assert weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)


def test_sparse_file_round_trips_and_is_smaller(tmp_path: Path) -> None:
    model = build_tiny("bert")
    magnitude_prune(model, 0.8)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    dense_path = tmp_path / "dense.safetensors"
    save_file(state, str(dense_path))
    report = save_sparse_safetensors(state, tmp_path / "sparse.safetensors")
    loaded = load_sparse_safetensors(report.path)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert set(prunable_weights(model)) <= set(report.sparse_tensors)
    assert report.nbytes == report.path.stat().st_size
    # the 80%-sparse encoder weights shrink ~4x; embeddings and LayerNorms stay dense
    assert report.nbytes < 0.8 * dense_path.stat().st_size
    assert report.dense_nbytes == sum(t.numel() * t.element_size() for t in state.values())


def test_dense_tensors_stay_dense(tmp_path: Path) -> None:
    tensors = {
        "w": torch.randn(16, 16),
        "small": torch.tensor([0.0, 1.0, 0.0]),
        "s": torch.tensor(2.0),
    }
    tensors["w"][tensors["w"].abs() < 1.5] = 0  # ~87% zeros: encoded
    report = save_sparse_safetensors(tensors, tmp_path / "t.safetensors")
    assert report.sparse_tensors == ["w"]
    loaded = load_sparse_safetensors(report.path)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
