"""Int4 weight-only quantization of an ONNX graph's MatMuls and embedding tables.

Matmuls: every MatMul whose second input is a constant weight (the encoder's Q, K, V,
attention-output and FFN matrices; the attention products of two activations are not weights
and stay) becomes a `com.microsoft` `MatMulNBits` node: 4-bit weights in blocks of
`block_size` along the input dimension, one scale per block (and a zero point unless
symmetric), dequantized on the fly by ONNX Runtime's CPU kernel.

Embeddings: every Gather from a constant table (word, position and token-type embeddings)
becomes a `com.microsoft` `GatherBlockQuantized` node, blocks of `block_size` along the hidden
dimension. In a small student the word-embedding table is most of the file (MiniLM's 384-wide
rows, even after vocabulary pruning), so this is the largest single saving int4 offers.

What is left (the pooler and classifier Gemms, and whichever of the two kinds is not chosen)
is for the int8 quantization that follows. The file stays an ordinary ONNX Runtime model: the
server loads it as it loads the int8 one.

Pure file to file; no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INT4_OP = "MatMulNBits"
INT4_GATHER_OP = "GatherBlockQuantized"


@dataclass(frozen=True)
class Int4Report:
    quantized: int  # MatMuls with a constant weight now stored in 4 bits
    kept: int  # MatMuls left as they were (attention products; all of them if matmuls=False)
    embeddings: int  # embedding tables now stored in 4 bits

    def to_dict(self) -> dict[str, int]:
        return {
            "int4_matmuls": self.quantized,
            "float_matmuls": self.kept,
            "int4_embeddings": self.embeddings,
        }


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


def quantize_int4(
    src: Path,
    dst: Path,
    *,
    matmuls: bool = True,
    embeddings: bool = False,
    block_size: int,
    symmetric: bool,
    accuracy_level: int,
) -> Int4Report:
    """Write `src` to `dst` with its constant-weight MatMuls and/or embedding tables in 4 bits
    (see the module doc).

    `accuracy_level` is MatMulNBits' compute type for the activations (0: unset, the kernel's
    default; 4: int8, the fastest on CPUs with int8 dot products)."""
    import onnx

    if not (matmuls or embeddings):
        raise ValueError("int4: nothing to quantize (neither matmuls nor embeddings)")
    ops_to_quantize = (("MatMul",) if matmuls else ()) + (("Gather",) if embeddings else ())
    quant_format, config_cls, quantizer_cls = quantizer_classes()
    model = onnx.load(str(src))
    config = config_cls(
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level or None,
        quant_format=quant_format.QOperator,
        op_types_to_quantize=ops_to_quantize,
        # MatMul weights are blocked along their input (row) axis; embedding tables along
        # the hidden axis, so one block is a slice of one token's vector.
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer = quantizer_cls(model, algo_config=config)
    quantizer.process()
    out = quantizer.model.model
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(out, str(dst))
    ops = [node.op_type for node in out.graph.node]
    return Int4Report(
        quantized=ops.count(INT4_OP),
        kept=ops.count("MatMul"),
        embeddings=ops.count(INT4_GATHER_OP),
    )
