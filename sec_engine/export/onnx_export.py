"""ONNX export of a sequence classifier, and ONNX Runtime dynamic int8 quantization.

The exporter is TorchScript-based (`dynamo=False`, opset 17), the path checked on BERT-family
models in docs/DESIGN_NOTES.md, library constraints. Batch and sequence axes are dynamic, so the file serves any
batch and padding length. The graph's inputs are exactly the tokenizer's model inputs, so a
user feeds `tokenizer(...)` output straight in (token_type_ids included for pair tasks).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from sec_engine.compression.qat import EXPORT_SCHEME, Int8Scheme
from sec_engine.export import per_token

OPSET = 17


class _LogitsOnly(nn.Module):
    """Positional inputs in a fixed order and a single logits output, for a clean graph."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(**dict(zip(self.names, tensors, strict=True))).logits
        return logits


@contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """Trace the eager attention path, then restore the model's own.

    The exporter lowers `scaled_dot_product_attention` (transformers' default "sdpa") to a
    boolean mask expanded to [batch, heads, seq, seq] in every layer and a NaN guard after the
    softmax (Where, IsNaN); eager attention adds one broadcast [batch, 1, 1, seq] mask.
    Measured on the 4-layer MiniLM student at batch 32 x 128 tokens: the same logits (1e-6),
    12 % less time in fp32 and 17 % less in int8 (`docs/DESIGN_NOTES.md`)."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    if previous in (None, "eager") or switch is None:
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(previous)


def export_onnx(
    model: nn.Module, example: dict[str, torch.Tensor], names: list[str], path: Path
) -> Path:
    """Export `model` (on CPU, fp32, eval mode) to `path`; `example` is a small real batch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    # eval() on the wrapper too: the exporter restores the wrapper's mode afterwards, and a
    # new Module is in training mode, which would switch `model`'s dropout back on.
    wrapper = _LogitsOnly(model, names).eval()
    args = tuple(example[n].cpu() for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad(), _eager_attention(model):
        # The tracer warns about Python control flow on shapes that is constant for BERT-like
        # encoders; the round-trip tests check the exported graph on other shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def quantize_onnx_int8(src: Path, dst: Path, scheme: Int8Scheme = EXPORT_SCHEME) -> Path:
    """Dynamic int8 (QInt8 weights on `scheme`'s grid, activations quantized at run time, per
    token under the engine's scheme: `export.per_token`), embeddings included. QAT trains
    against the same scheme (`compression.qat`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    quantize_dynamic(
        src,
        dst,
        weight_type=QuantType.QInt8,
        per_channel=scheme.per_channel,
        reduce_range=scheme.reduce_range,
        # After an int4 pass (`compression.int4_ops`) ONNX shape inference cannot type the
        # outputs of com.microsoft ops such as GatherBlockQuantized; they are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if scheme.per_token_activations:
        per_token.rewrite_file(dst)
    return dst
