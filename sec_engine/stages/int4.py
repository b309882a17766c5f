"""Int4 stage: the ONNX artifact's weight matrices and/or embeddings in 4 bits (an export
technique).

Nothing changes in training: the stage acts once, at export, on the student's fp32 ONNX graph
(`rewrite_onnx`), before the int8 quantization that makes the artifact's ONNX file. The
constant-weight MatMuls become MatMulNBits and the embedding tables GatherBlockQuantized, as
the spec chooses (sec_engine.compression.int4_ops); the int8 pass then quantizes what is left.
The export measures the result as it measures any ONNX file (accuracy on the test split,
size, latency), so the manifest's numbers are the int4 model's.

With SQD's QAT on, the student trained against the int8 grid; int4 is coarser, and the
accuracy it costs shows in the measured accuracy, not before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sec_engine.compression.int4_ops import quantize_int4
from sec_engine.spec import Int4Config
from sec_engine.stages.base import Stage


class Int4Stage(Stage):
    name = "int4"

    def __init__(self, config: Int4Config) -> None:
        self.config = config
        self.info: dict[str, Any] = {}

    def rewrite_onnx(self, fp32_onnx: Path, scratch: Path) -> Path:
        out = scratch / f"{fp32_onnx.stem}.int4.onnx"
        report = quantize_int4(
            fp32_onnx,
            out,
            matmuls=self.config.matmuls,
            embeddings=self.config.embeddings,
            block_size=self.config.block_size,
            symmetric=self.config.symmetric,
            accuracy_level=self.config.accuracy_level,
        )
        self.info.update(report.to_dict())
        return out

    def report(self) -> dict[str, Any]:
        return {
            **self.info,
            "matmuls": self.config.matmuls,
            "embeddings": self.config.embeddings,
            "block_size": self.config.block_size,
            "symmetric": self.config.symmetric,
            "accuracy_level": self.config.accuracy_level,
        }
