"""The ops under mixed precision, on CPU always and on CUDA where present (bf16 autocast)."""

from __future__ import annotations

import pytest
import torch

from sec_engine.compression import (
    StructuredMasks,
    attach_masks,
    group_sparsity_penalty,
    make_student,
    prepare_qat,
    prune_structured,
    strip_qat,
    taylor_importance,
)

from .tiny_models import build_tiny, make_inputs

_DEVICES = [
    pytest.param("cpu", marks=pytest.mark.unit),
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


@pytest.mark.parametrize("device", _DEVICES)
def test_ops_under_bf16_autocast(device: str) -> None:
    model = build_tiny("mpnet").to(device)
    inputs = {k: v.to(device) for k, v in make_inputs("mpnet", pair=True).items()}
    student, _ = make_student(model, num_layers=2)
    masks = StructuredMasks.ones(student)
    masks.heads[0][0] = 0
    masks.neurons[1][:16] = 0
    with torch.autocast(device, dtype=torch.bfloat16):
        scores = taylor_importance(
            student, [inputs], lambda m, b: m(**b).logits.float().logsumexp(-1).mean()
        )
        attach_masks(student, masks)
        prepare_qat(student, quantize_activations=True)
        student.train()
        loss = student(**inputs).logits.float().sum() + group_sparsity_penalty(student)
        torch.autograd.backward(loss)
        strip_qat(student)
        student.eval()
        with torch.no_grad():
            masked = student(**inputs).logits.float()
            prune_structured(student, masks)
            pruned = student(**inputs).logits.float()
    assert all(s.device.type == device for s in scores.heads)
    assert all(torch.isfinite(s).all() for s in scores.neurons)
    # bf16 rounding differs between the two graphs; structure equality is tested in fp32
    torch.testing.assert_close(pruned, masked, atol=0.05, rtol=0.05)
