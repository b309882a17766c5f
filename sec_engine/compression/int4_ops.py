"""Int4 weight-only quantization of an ONNX graph's MatMuls (ONNX Runtime's MatMulNBits).

Every MatMul whose second input is a constant weight (the encoder's Q, K, V, attention-output
and FFN matrices; the attention products of two activations are not weights and stay) becomes
a `com.microsoft` `MatMulNBits` node: 4-bit weights in blocks of `block_size` along the input
dimension, one scale per block (and a zero point unless symmetric), dequantized on the fly by
ONNX Runtime's CPU kernel. What is left (embeddings, the pooler and classifier Gemms) is for
the int8 quantization that follows. The file stays an ordinary ONNX Runtime model: the server
loads it as it loads the int8 one.

Pure file to file; no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INT4_OP = "MatMulNBits"


@dataclass(frozen=True)
class Int4Report:
    quantized: int  # MatMuls with a constant weight now stored in 4 bits
    kept: int  # MatMuls of two activations (attention), left as they were

    def to_dict(self) -> dict[str, int]:
        return {"int4_matmuls": self.quantized, "float_matmuls": self.kept}


def quantizer_classes() -> tuple[Any, Any, Any]:
    """The quantizer's classes. Importing its module calls `logging.basicConfig(level=INFO)`,
    which would make the root logger of a process without handlers print every later INFO
    line (ONNX Runtime's quantizers log one per tensor): the root logger is put back as it
    was, and the module's own logger keeps to warnings."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from onnxruntime.quantization import QuantFormat
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    return QuantFormat, DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer


def quantize_matmuls_int4(
    src: Path, dst: Path, *, block_size: int, symmetric: bool, accuracy_level: int
) -> Int4Report:
    """Write `src` to `dst` with its constant-weight MatMuls in 4 bits (see the module doc).

    `accuracy_level` is MatMulNBits' compute type for the activations (0: unset, the kernel's
    default; 4: int8, the fastest on CPUs with int8 dot products)."""
    import onnx

    quant_format, config_cls, quantizer_cls = quantizer_classes()
    model = onnx.load(str(src))
    config = config_cls(
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level or None,
        quant_format=quant_format.QOperator,
        op_types_to_quantize=("MatMul",),
    )
    quantizer = quantizer_cls(model, algo_config=config)
    quantizer.process()
    out = quantizer.model.model
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(out, str(dst))
    ops = [node.op_type for node in out.graph.node]
    return Int4Report(quantized=ops.count(INT4_OP), kept=ops.count("MatMul"))
