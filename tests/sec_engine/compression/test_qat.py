from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sec_engine.compression import (
    FakeQuantLinear,
    StructuredMasks,
    attach_masks,
    prepare_qat,
    strip_qat,
)
from sec_engine.compression.qat import EXPORT_SCHEME, fake_quant_activation, fake_quant_weight
from sec_engine.export.onnx_export import quantize_onnx_int8

from .tiny_models import build_tiny, make_inputs

pytestmark = pytest.mark.unit


def test_weights_land_on_a_per_channel_int8_grid() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=gen)
    w[2] *= 100  # a row with a much larger range must not coarsen the others
    q = fake_quant_weight(w, per_channel=True)
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    steps = q / scale
    torch.testing.assert_close(steps, steps.round(), atol=1e-4, rtol=0)
    assert steps.abs().max() <= 127 + 1e-4
    assert ((q - w).abs() <= scale / 2 + 1e-6).all()
    assert not torch.equal(q, w)


def test_the_qat_grid_is_the_grid_onnx_runtime_exports(tmp_path: Path) -> None:
    """QAT must train on exactly the int8 weights the export writes (EXPORT_SCHEME)."""
    import onnx
    from onnx import numpy_helper

    gen = torch.Generator().manual_seed(1)
    linear = nn.Linear(16, 12, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(12, 16, generator=gen))
        linear.weight[3] *= 50  # one wide row: per-tensor scales would coarsen the others
    fp32 = tmp_path / "linear.onnx"
    torch.onnx.export(
        linear,
        (torch.randn(2, 16),),
        str(fp32),
        input_names=["x"],
        dynamo=False,
        dynamic_axes={"x": {0: "batch"}},
    )
    quantize_onnx_int8(fp32, tmp_path / "linear.int8.onnx")
    inits = {
        i.name: numpy_helper.to_array(i)
        for i in onnx.load(str(tmp_path / "linear.int8.onnx")).graph.initializer
    }
    q = next(v for k, v in inits.items() if k.endswith("_quantized"))
    scale = next(v for k, v in inits.items() if k.endswith("_scale") and v.size == 12)
    exported = torch.from_numpy(q.astype("float32") * scale).T  # (out, in) like nn.Linear
    simulated = fake_quant_weight(
        linear.weight.detach(), per_channel=EXPORT_SCHEME.per_channel, qmax=EXPORT_SCHEME.qmax
    )
    torch.testing.assert_close(simulated, exported, atol=1e-6, rtol=1e-5)
    assert q.min() >= -EXPORT_SCHEME.qmax
    assert q.max() <= EXPORT_SCHEME.qmax


def test_per_tensor_grid_is_coarser_for_narrow_rows() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 10, generator=gen)
    w[2] *= 100
    q = fake_quant_weight(w)
    scale = w.abs().max() / 127
    steps = q / scale
    torch.testing.assert_close(steps, steps.round(), atol=1e-3, rtol=0)
    assert not torch.allclose(q, fake_quant_weight(w, per_channel=True))


def test_straight_through_gradient() -> None:
    w = torch.randn(4, 4, requires_grad=True)
    torch.autograd.backward(fake_quant_weight(w).mul(torch.arange(16.0).view(4, 4)).sum())
    assert w.grad is not None
    torch.testing.assert_close(w.grad, torch.arange(16.0).view(4, 4))
    x = torch.randn(3, 5, requires_grad=True)
    qx = fake_quant_activation(x)
    scale = x.detach().abs().amax(dim=-1, keepdim=True) / 127  # one scale per token (row)
    assert ((qx - x).abs() <= scale / 2 + 1e-6).all()
    torch.autograd.backward(qx.sum())
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.ones(3, 5))
    y = torch.randn(3, 5)
    qy = fake_quant_activation(y, per_token=False)  # ONNX Runtime's default: uint8 per tensor
    assert ((qy - y).abs() <= (y.max() - y.min()) / 255 / 2 + 1e-5).all()


def test_per_token_activation_scales_ignore_other_rows() -> None:
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    loud = x.clone()
    loud[3] *= 1000  # an outlier row (another request in the batch) must not coarsen row 0
    torch.testing.assert_close(fake_quant_activation(loud)[:3], fake_quant_activation(x)[:3])
    assert not torch.allclose(
        fake_quant_activation(loud, per_token=False)[:3],
        fake_quant_activation(x, per_token=False)[:3],
    )


def test_prepare_trains_through_quantization_and_strip_restores(arch: str) -> None:
    model = build_tiny(arch)
    inputs = make_inputs(arch, pair=True)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    params = [id(p) for p in model.parameters()]
    keys = list(model.state_dict())
    with torch.no_grad():
        fp32 = model(**inputs).logits
    assert prepare_qat(model, quantize_activations=True) == len(linears)
    assert prepare_qat(model) == 0  # idempotent
    assert all(type(m) is FakeQuantLinear for m in linears)
    assert [id(p) for p in model.parameters()] == params  # optimizers stay valid
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        quant = model(**inputs).logits
    assert not torch.equal(quant, fp32)
    torch.testing.assert_close(quant, fp32, atol=0.05, rtol=0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    torch.autograd.backward(model(**inputs).logits.sum())
    before = linears[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(linears[0].weight, before)
    assert strip_qat(model) == len(linears)
    assert all(type(m) is nn.Linear for m in linears)
    assert all(not hasattr(m, "sec_quantize_activations") for m in linears)
    probe = torch.randn(2, 32)
    with torch.no_grad():  # stripped: exactly the plain Linear math on the trained weights
        expected = nn.functional.linear(probe, linears[0].weight, linears[0].bias)
        torch.testing.assert_close(linears[0](probe), expected, atol=0, rtol=0)


def test_qat_keeps_pruning_gates_and_skips_prefixes() -> None:
    model = build_tiny("bert")
    inputs = make_inputs("bert", pair=False)
    masks = StructuredMasks.ones(model)
    masks.heads[0][:3] = 0
    attach_masks(model, masks)
    converted = prepare_qat(model, skip=("classifier",))
    assert type(model.classifier) is nn.Linear
    assert converted == sum(isinstance(m, nn.Linear) for m in model.modules()) - 1
    with torch.no_grad():
        gated = model(**inputs).logits
        model.bert.encoder.layer[0].attention.output.dense.sec_gate.fill_(1.0)
        ungated = model(**inputs).logits
    assert not torch.allclose(gated, ungated)
