from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sec_engine.compression import (
    StructuredMasks,
    StructuredScores,
    attach_masks,
    attached_masks,
    detach_masks,
    group_sparsity_penalty,
    magnitude_importance,
    prune_structured,
    select_structures,
    state_dict_nbytes,
    taylor_importance,
)
from sec_engine.models.arch import layer_views

from .tiny_models import build_tiny, make_inputs

pytestmark = pytest.mark.unit


def _uneven_masks(model: torch.nn.Module) -> StructuredMasks:
    """Different counts per layer, including a layer left with a single head."""
    masks = StructuredMasks.ones(model)
    masks.heads[0][1] = 0
    masks.heads[1][[0, 2, 3]] = 0
    masks.neurons[0][:10] = 0
    masks.neurons[2][::2] = 0
    return masks


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    labels = torch.tensor([0, 1, 2])
    return torch.nn.functional.cross_entropy(model(**batch).logits, labels)


def _file_size(model: torch.nn.Module, path: Path) -> int:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.stat().st_size


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_pruned_model_matches_masked_model_and_is_smaller(
    arch: str, pair: bool, tmp_path: Path
) -> None:
    model = build_tiny(arch)
    inputs = make_inputs(arch, pair=pair)
    with torch.no_grad():
        dense = model(**inputs).logits
        masks = _uneven_masks(model)
        attach_masks(model, masks)
        masked = model(**inputs).logits
        before_bytes = _file_size(model, tmp_path / "dense.safetensors")
        report = prune_structured(model, masks)
        pruned = model(**inputs).logits
    assert not torch.allclose(masked, dense, atol=1e-6)  # the masks really change the model
    torch.testing.assert_close(pruned, masked, atol=1e-5, rtol=1e-5)
    assert report.heads_after == [3, 1, 4]
    assert report.neurons_after == [54, 64, 32]
    assert [v.num_heads for v in layer_views(model)] == [3, 1, 4]
    assert attached_masks(model) is None
    assert _file_size(model, tmp_path / "pruned.safetensors") < before_bytes
    # the attention modules' cached head counts follow the weights
    attn = layer_views(model)[1].attention
    assert getattr(attn, "num_attention_heads", getattr(attn, "n_heads", None)) == 1


def test_pruning_twice_composes(arch: str) -> None:
    """A second step indexes the already-pruned layer (MPNet keeps original head ids)."""
    model = build_tiny(arch)
    inputs = make_inputs(arch, pair=True)
    first = StructuredMasks.ones(model)
    first.heads[0][0] = 0
    prune_structured(model, first)
    second = StructuredMasks.ones(model)
    second.heads[0][1] = 0  # original head 2
    second.neurons[1][:8] = 0
    with torch.no_grad():
        attach_masks(model, second)
        masked = model(**inputs).logits
        prune_structured(model, second)
        torch.testing.assert_close(model(**inputs).logits, masked, atol=1e-5, rtol=1e-5)
    assert [v.num_heads for v in layer_views(model)] == [2, 4, 4]


def test_masks_are_shape_preserving_and_removable() -> None:
    model = build_tiny("bert")
    inputs = make_inputs("bert", pair=False)
    with torch.no_grad():
        dense = model(**inputs).logits
        live = attach_masks(model, StructuredMasks.ones(model))
        torch.testing.assert_close(model(**inputs).logits, dense)
        live.heads[0].zero_()  # live gates: editing them changes the model
        changed = model(**inputs).logits
        clone = copy.deepcopy(model)
        detach_masks(clone)  # detaching a copy leaves the original gated
        torch.testing.assert_close(model(**inputs).logits, changed)
        detach_masks(model)
        torch.testing.assert_close(model(**inputs).logits, dense)
    assert not torch.allclose(changed, dense)
    assert all(
        p.shape == q.shape for p, q in zip(model.parameters(), clone.parameters(), strict=True)
    )


def test_prune_refuses_to_empty_a_layer() -> None:
    model = build_tiny("bert")
    masks = StructuredMasks.ones(model)
    masks.heads[2].zero_()
    with pytest.raises(ValueError, match="layer 2"):
        prune_structured(model, masks)


def test_taylor_scores_are_first_order_loss_changes() -> None:
    model = build_tiny("bert").train()
    inputs = make_inputs("bert", pair=False)
    live = attach_masks(model, StructuredMasks.ones(model))
    scores = taylor_importance(model, [inputs], _loss)
    # state restored: mode, the caller's own gate tensors, no parameter gradients
    assert model.training
    restored = attached_masks(model)
    assert restored is not None
    assert all(a is b for a, b in zip(restored.heads, live.heads, strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert [s.shape for s in scores.heads] == [torch.Size([4])] * 3
    assert [s.shape for s in scores.neurons] == [torch.Size([64])] * 3
    # |dL/dξ| against a finite difference on one head's gate
    model.eval()
    eps = 1e-3
    with torch.no_grad():
        base = _loss(model, inputs)
        nudged = StructuredMasks.ones(model)
        nudged.heads[1][2] = 1 - eps
        attach_masks(model, nudged)
        moved = _loss(model, inputs)
    assert abs(float((base - moved).abs() / eps) - float(scores.heads[1][2])) < 1e-2


def test_taylor_scores_zero_for_a_dead_head_and_average_batches() -> None:
    model = build_tiny("distilbert")
    view = layer_views(model)[0]
    with torch.no_grad():
        view.value.weight[8:16] = 0
        view.value.bias[8:16] = 0  # head 1 of layer 0 now outputs nothing
    batch = make_inputs("distilbert", pair=False)
    one = taylor_importance(model, [batch], _loss)
    two = taylor_importance(model, [batch, batch, batch], _loss, max_batches=2)
    assert float(one.heads[0][1]) == 0.0
    assert float(one.heads[0].sum()) > 0.0
    torch.testing.assert_close(one.heads[2], two.heads[2])
    with pytest.raises(ValueError, match="at least one batch"):
        taylor_importance(model, [], _loss)


def test_magnitude_importance_ranks_large_groups_first() -> None:
    model = build_tiny("roberta")
    view = layer_views(model)[1]
    with torch.no_grad():
        view.query.weight[24:32] *= 10
        view.ffn_in.weight[5] *= 10
    scores = magnitude_importance(model)
    assert int(scores.heads[1].argmax()) == 3
    assert int(scores.neurons[1].argmax()) == 5


def _scores(values: list[list[float]]) -> list[torch.Tensor]:
    return [torch.tensor(v) for v in values]


def test_select_global_prunes_lowest_and_keeps_a_floor() -> None:
    heads = _scores([[1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4]])
    neurons = _scores([[float(i) for i in range(8)], [float(i) for i in range(8)]])
    scores = StructuredScores(heads=heads, neurons=neurons)
    # normalised per layer, the two layers rank the same: 2 lowest of each go at 50%
    masks = select_structures(scores, head_sparsity=0.5, neuron_sparsity=0.25, min_neurons=2)
    assert [m.tolist() for m in masks.heads] == [[0, 0, 1, 1], [0, 0, 1, 1]]
    assert masks.neuron_sparsity() == 0.25
    # raw scores: the small layer loses as much as the floor allows
    raw = select_structures(scores, head_sparsity=0.5, neuron_sparsity=0.0, normalize=False)
    assert [m.tolist() for m in raw.heads] == [[0, 1, 1, 1], [0, 0, 0, 1]]
    extreme = select_structures(scores, head_sparsity=0.99, neuron_sparsity=0.99, min_neurons=3)
    assert extreme.num_heads_kept() == [1, 1]
    assert extreme.num_neurons_kept() == [3, 3]


def test_select_per_layer_gives_equal_counts() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = StructuredScores(
        heads=[torch.rand(4, generator=gen) for _ in range(3)],
        neurons=[torch.rand(64, generator=gen) * (i + 1) for i in range(3)],
    )
    masks = select_structures(scores, head_sparsity=0.5, neuron_sparsity=0.25, scope="layer")
    assert masks.num_heads_kept() == [2, 2, 2]
    assert masks.num_neurons_kept() == [48, 48, 48]
    for mask, score in zip(masks.neurons, scores.neurons, strict=True):
        assert score[mask == 0].max() <= score[mask == 1].min()
    with pytest.raises(ValueError, match="sparsity"):
        select_structures(scores, head_sparsity=1.0, neuron_sparsity=0.0)


def test_group_penalty_is_the_mean_group_norm_and_differentiable() -> None:
    model = build_tiny("mpnet")
    penalty = group_sparsity_penalty(model)
    torch.autograd.backward(penalty)
    view = layer_views(model)[0]
    assert view.query.weight.grad is not None
    assert view.ffn_out.weight.grad is not None
    with torch.no_grad():
        d = 8
        head0 = (
            view.query.weight[:d].pow(2).sum()
            + view.key.weight[:d].pow(2).sum()
            + view.value.weight[:d].pow(2).sum()
            + view.query.bias[:d].pow(2).sum()
            + view.key.bias[:d].pow(2).sum()
            + view.value.bias[:d].pow(2).sum()
            + view.attn_out.weight[:, :d].pow(2).sum()
        ).sqrt()
        heads_only = group_sparsity_penalty(model, neurons=False)
        all_heads = torch.cat(magnitude_importance(model).heads)
    torch.testing.assert_close(all_heads[0], head0)
    torch.testing.assert_close(heads_only, all_heads.mean())
    with torch.no_grad():
        view.query.weight.zero_()
    assert float(group_sparsity_penalty(model).detach()) < float(penalty.detach())


def test_end_to_end_step_shrinks_the_model() -> None:
    model = build_tiny("bert")
    batch = make_inputs("bert", pair=True)
    before = state_dict_nbytes(model)
    scores = taylor_importance(model, [batch], _loss)
    masks = select_structures(scores, head_sparsity=0.5, neuron_sparsity=0.5)
    report = prune_structured(model, masks)
    assert sum(report.heads_after) == 6
    assert sum(report.neurons_after) == 96
    assert state_dict_nbytes(model) < before
    model(**batch).logits.sum().backward()  # still trains


# The legacy TorchScript exporter (the one docs/DESIGN_NOTES.md names) warns about tracing; expected.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pruned_model_exports_to_onnx_with_its_structure(arch: str, tmp_path: Path) -> None:
    """The int8 ONNX deliverable carries the per-layer structure (docs/DESIGN_NOTES.md, library constraints)."""
    import onnxruntime as ort

    model = build_tiny(arch)
    prune_structured(model, _uneven_masks(model))
    inputs = make_inputs(arch, pair=True)
    names = list(inputs)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        model,
        tuple(inputs[n] for n in names),
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in names},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    short = {n: t[:2, :9].numpy() for n, t in inputs.items()}  # other batch and length
    (logits,) = session.run(["logits"], short)
    with torch.no_grad():
        expected = model(**{n: torch.from_numpy(v) for n, v in short.items()}).logits
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-5, rtol=1e-5)
