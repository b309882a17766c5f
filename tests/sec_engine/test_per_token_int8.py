"""Per-token activation scales in the int8 ONNX export: a row's answer does not depend on its
batch-mates or on padding, and the file computes what QAT simulates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sec_engine.artifact_contract.onnx_runtime import cpu_session
from sec_engine.compression.qat import (
    EXPORT_SCHEME,
    Int8Scheme,
    fake_quant_activation,
    fake_quant_weight,
)
from sec_engine.export.onnx_export import export_onnx, quantize_onnx_int8
from tests.sec_engine.compression.tiny_models import ARCHS, build_tiny, make_inputs

pytestmark = pytest.mark.unit

PER_TENSOR = Int8Scheme(
    per_channel=EXPORT_SCHEME.per_channel,
    reduce_range=EXPORT_SCHEME.reduce_range,
    per_token_activations=False,
)


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    out: np.ndarray = cpu_session(path, 1).run(None, feeds)[0]
    return out


def _int8(arch: str, tmp_path: Path, scheme: Int8Scheme) -> Path:
    model = build_tiny(arch)
    example = make_inputs(arch, pair=False)
    fp32 = export_onnx(model, example, list(example), tmp_path / f"{arch}.onnx")
    return quantize_onnx_int8(
        fp32, tmp_path / f"{arch}.{scheme.per_token_activations}.onnx", scheme
    )


def _batch_dependence(path: Path, feeds: dict[str, np.ndarray]) -> float:
    """Largest logit change of a row scored alone vs in its batch, and vs in a batch padded
    four positions longer."""
    together = _run(path, feeds)
    alone = np.concatenate(
        [_run(path, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(len(together))]
    )
    pad = {k: np.pad(v, ((0, 0), (0, 4))) for k, v in feeds.items()}  # mask 0 on the new tail
    if "input_ids" in pad:
        pad["input_ids"][:, -4:] = feeds["input_ids"][0, -1]  # the pad id this row already uses
    padded = _run(path, pad)
    return float(max(np.abs(together - alone).max(), np.abs(together - padded).max()))


@pytest.mark.parametrize("arch", ARCHS)
def test_a_rows_logits_do_not_depend_on_its_batch(arch: str, tmp_path: Path) -> None:
    feeds = {k: v.numpy() for k, v in make_inputs(arch, pair=False, batch=6, seed=3).items()}
    per_token = _int8(arch, tmp_path, EXPORT_SCHEME)
    graph = onnx.load(str(per_token)).graph
    assert not [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert _batch_dependence(per_token, feeds) < 1e-5
    # The check can fail: ONNX Runtime's per-tensor default moves rows with their batch.
    assert _batch_dependence(_int8(arch, tmp_path, PER_TENSOR), feeds) > 5e-5
    with torch.no_grad():
        fp32 = build_tiny(arch)(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
    np.testing.assert_allclose(_run(per_token, feeds), fp32.numpy(), atol=0.02)


def test_the_exported_linear_computes_what_qat_simulates(tmp_path: Path) -> None:
    """int8 codes per token times per-channel weights: the file and `fake_quant_*` agree."""
    gen = torch.Generator().manual_seed(4)
    linear = nn.Linear(24, 10)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(10, 24, generator=gen))
        linear.bias.copy_(torch.randn(10, generator=gen))
    x = torch.randn(2, 5, 24, generator=gen)
    x[1, 3] *= 40  # one loud token
    fp32 = tmp_path / "linear.onnx"
    torch.onnx.export(
        linear,
        (x,),
        str(fp32),
        input_names=["x"],
        dynamo=False,
        dynamic_axes={"x": {0: "batch", 1: "sequence"}},
    )
    exported = _run(quantize_onnx_int8(fp32, tmp_path / "linear.int8.onnx"), {"x": x.numpy()})
    w = fake_quant_weight(
        linear.weight.detach(), per_channel=EXPORT_SCHEME.per_channel, qmax=EXPORT_SCHEME.qmax
    )
    with torch.no_grad():
        simulated = nn.functional.linear(fake_quant_activation(x), w, linear.bias)
    np.testing.assert_allclose(exported, simulated.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_export_traces_eager_attention_and_restores_the_model(arch: str, tmp_path: Path) -> None:
    """The exported graph has no per-layer [batch, heads, seq, seq] mask or NaN guard (the
    SDPA lowering), matches the model, and the model keeps its own attention afterwards."""
    model = build_tiny(arch)
    before = model.config._attn_implementation
    example = make_inputs(arch, pair=False)
    path = export_onnx(model, example, list(example), tmp_path / "fp32.onnx")
    assert model.config._attn_implementation == before
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "IsNaN" not in ops
    feeds = {k: v.numpy() for k, v in make_inputs(arch, pair=False, batch=5, seed=6).items()}
    with torch.no_grad():
        expected = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    np.testing.assert_allclose(_run(path, feeds), expected, atol=1e-5)
    assert not model.training  # the export left dropout off
