"""Self-attention relation distillation: the loss, and capturing q/k/v under head gates."""

from __future__ import annotations

import pytest
import torch

from sec_engine.compression.gates import StructuredMasks, attach_masks
from sec_engine.compression.relations import capture_qkv, qkv_tuple, relation_loss
from sec_engine.models.arch import layer_views

from .tiny_models import ARCHS, build_tiny, make_inputs

pytestmark = pytest.mark.unit


def _qkv(batch: int, tokens: int, width: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, tokens, width, generator=gen) for _ in range(3))


def test_zero_for_the_teachers_own_relations_and_positive_otherwise() -> None:
    mask = torch.ones(2, 5, dtype=torch.long)
    t = _qkv(2, 5, 16, seed=0)
    assert relation_loss(t, t, mask, relation_heads=4).item() == pytest.approx(0.0, abs=1e-6)
    s = _qkv(2, 5, 16, seed=1)
    assert relation_loss(s, t, mask, relation_heads=4).item() > 0.01


def test_padding_does_not_count() -> None:
    """Whatever sits at padded positions, the loss is that of the unpadded rows."""
    s, t = _qkv(1, 4, 16, seed=2), _qkv(1, 4, 16, seed=3)
    short = relation_loss(s, t, torch.ones(1, 4, dtype=torch.long), relation_heads=2)
    junk_s, junk_t = _qkv(1, 3, 16, seed=4), _qkv(1, 3, 16, seed=5)
    padded_s = tuple(torch.cat([a, b * 100], dim=1) for a, b in zip(s, junk_s, strict=True))
    padded_t = tuple(torch.cat([a, b * 100], dim=1) for a, b in zip(t, junk_t, strict=True))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
    padded = relation_loss(padded_s, padded_t, mask, relation_heads=2)
    torch.testing.assert_close(padded, short)


def test_student_and_teacher_widths_may_differ() -> None:
    """Only token-by-token matrices are compared: a narrower student works, if its width
    splits into the relation heads."""
    mask = torch.ones(2, 6, dtype=torch.long)
    loss = relation_loss(_qkv(2, 6, 8, 0), _qkv(2, 6, 24, 1), mask, relation_heads=4)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="does not split into 3 relation heads"):
        relation_loss(_qkv(2, 6, 8, 0), _qkv(2, 6, 24, 1), mask, relation_heads=3)


@pytest.mark.parametrize("arch", ARCHS)
def test_capture_records_the_layers_projections_on_every_family(arch: str) -> None:
    model = build_tiny(arch)
    inputs = make_inputs(arch, pair=False)
    view = layer_views(model)[2]
    with torch.no_grad():
        expected = view.query(model(**inputs, output_hidden_states=True).hidden_states[2])
        with capture_qkv(model, layer=2) as captured:
            model(**inputs)
    q, k, v = qkv_tuple(captured)
    assert q.shape == k.shape == v.shape == (3, 12, 32)
    torch.testing.assert_close(q, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        model(**inputs)
    assert len(view.query._forward_hooks) == 0, "the hooks leave with the block"


def test_a_masked_head_drops_out_and_gets_no_gradient() -> None:
    model = build_tiny("bert").train()
    masks = StructuredMasks.ones(model)
    masks.heads[2][1] = 0.0  # head 1 of the last layer: dims 8..15
    attach_masks(model, masks)
    teacher = build_tiny("bert", seed=1)
    inputs = make_inputs("bert", pair=False)
    with capture_qkv(model, layer=2) as s_cap:
        model(**inputs)
    with torch.no_grad(), capture_qkv(teacher, layer=2) as t_cap:
        teacher(**inputs)
    s_qkv = qkv_tuple(s_cap)
    assert torch.count_nonzero(s_qkv[0][..., 8:16]) == 0
    loss = relation_loss(s_qkv, qkv_tuple(t_cap), inputs["attention_mask"], relation_heads=4)
    loss.backward()
    grad = layer_views(model)[2].query.weight.grad
    assert grad is not None
    assert torch.count_nonzero(grad[8:16]) == 0
    assert torch.count_nonzero(grad[:8]) > 0


def test_nothing_recorded_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no forward pass recorded"):
        qkv_tuple({})
