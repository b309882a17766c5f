"""Writing the deliverable files and measuring teacher and compressed model side by side.

The layout of an artifact directory (the same for the CLI and the service) is the contract's
(`sec_engine.artifact_contract.layout`): model/ holds the HF-format compressed model, and
model.int8.onnx the int8 ONNX Runtime graph, which carries the pruned structure
(docs/DESIGN_NOTES.md, library constraints). The pipeline writes manifest.json last.

The teacher is measured from scratch copies (its fp32 safetensors size, its fp32 latency in
torch and ONNX Runtime, taking the faster as the reference) that are not part of the artifact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# Used here, and imported from here by the pipeline (hence `as`: an explicit re-export).
from sec_engine.artifact_contract.layout import HF_DIR as HF_DIR
from sec_engine.artifact_contract.layout import ONNX_INT8 as ONNX_INT8
from sec_engine.data.encoding import fixed_length_batch, model_input_names
from sec_engine.evaluation.latency import Latency, time_onnx, time_torch
from sec_engine.evaluation.runner import metrics_onnx, metrics_torch
from sec_engine.evaluation.size import size_mb, weights_mb
from sec_engine.export.hf_export import save_hf_model
from sec_engine.export.onnx_export import export_onnx, quantize_onnx_int8
from sec_engine.export.torch_int8 import quantize_torch_int8
from sec_engine.spec import QuantRuntime

AUTO_TORCH_MARGIN = 0.10  # runtime "auto" picks torch int8 only when it is this much faster


@dataclass
class Measured:
    metrics: dict[str, float]
    size_mb: float
    latency: Latency
    alternatives: list[Latency] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: round(v, 6) for k, v in self.metrics.items()}
        out["size_mb"] = round(self.size_mb, 4)
        out["latency_ms_per_batch"] = round(self.latency.ms_per_batch, 3)
        out["latency"] = self.latency.to_dict()
        out["latency_alternatives"] = [a.to_dict() for a in self.alternatives]
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class MeasureSetup:
    """Everything both models are measured with, so the comparison is like for like."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray
    batch_size: int
    pad_id: int
    threads: int
    latency_inputs: dict[str, torch.Tensor]
    input_names: list[str]
    split: str


def measure_setup(
    tokenizer: Any,
    examples: list[Any],
    features: list[dict[str, list[int]]],
    *,
    batch_size: int,
    pad_id: int,
    latency_batch: int,
    latency_seq_len: int,
    max_positions: int,
    split: str,
) -> MeasureSetup:
    seq_len = min(latency_seq_len, max_positions)
    inputs = fixed_length_batch(tokenizer, examples, latency_batch, seq_len)
    return MeasureSetup(
        features=features,
        labels=np.array([e.label for e in examples], dtype=np.int64),
        batch_size=batch_size,
        pad_id=pad_id,
        threads=torch.get_num_threads(),
        latency_inputs=inputs,
        input_names=model_input_names(tokenizer),
        split=split,
    )


def measure_teacher(
    teacher: nn.Module, tokenizer: Any, setup: MeasureSetup, scratch: Path
) -> Measured:
    teacher = teacher.cpu().eval()
    hf_dir = scratch / "teacher"
    save_hf_model(teacher, tokenizer, hf_dir)
    metrics = metrics_torch(
        teacher, setup.features, setup.labels, setup.batch_size, setup.pad_id, torch.device("cpu")
    )
    onnx_path = export_onnx(
        teacher, setup.latency_inputs, setup.input_names, scratch / "teacher.onnx"
    )
    candidates = [
        time_torch(teacher, setup.latency_inputs, threads=setup.threads, runtime="torch-fp32"),
        time_onnx(
            onnx_path, setup.latency_inputs, threads=setup.threads, runtime="onnxruntime-fp32"
        ),
    ]
    best = min(candidates, key=lambda lat: lat.ms_per_batch)
    return Measured(
        metrics=metrics,
        size_mb=weights_mb(hf_dir),
        latency=best,
        alternatives=candidates,
        extra={"size_file": "model.safetensors (fp32, not shipped)", "split": setup.split},
    )


def auto_picks_torch(
    *, ort_ms: float, torch_ms: float, ort_mb: float, torch_mb: float, max_size_mb: float | None
) -> bool:
    """The "auto" runtime: ONNX Runtime unless torch is clearly faster and its file is allowed.

    The int8 ONNX file is the self-contained int8 artifact, and single timings on a shared CPU
    vary by a few per cent, hence the margin. A size target is a constraint: torch's file (the
    fp32 weights) is allowed when it meets the target, or when neither file does and it is
    no larger. A job whose ONNX file misses the target by a few per cent must not ship a file
    four times larger for a faster timing (seen on an AVX2-only CPU: 11.3 MB ONNX vs a
    10.8 MB target, and auto shipped 49 MB).
    """
    torch_allowed = (
        max_size_mb is None
        or torch_mb <= max_size_mb
        or (ort_mb > max_size_mb and torch_mb <= ort_mb)
    )
    return torch_allowed and torch_ms < ort_ms * (1.0 - AUTO_TORCH_MARGIN)


def export_compressed(
    model: nn.Module,
    tokenizer: Any,
    setup: MeasureSetup,
    out_dir: Path,
    scratch: Path,
    runtime: QuantRuntime,
    max_size_mb: float | None = None,
    graph_passes: Sequence[Callable[[Path, Path], Path]] = (),
) -> Measured:
    """Write model/ and model.int8.onnx, then measure the int8 runtimes and pick one.

    `graph_passes` rewrite the fp32 ONNX graph in turn before its int8 quantization (the
    stages' `rewrite_onnx`: export techniques); each takes the graph and a scratch folder and
    returns the graph to go on with.

    `max_size_mb` is the job's size target (absolute, or teacher size / min_compression):
    "auto" picks the faster runtime among those whose file on disk meets it, because a size
    target is a constraint and latency the objective. torch's dynamic int8 is rebuilt from
    the fp32 weights at load, so its size on disk is the fp32 one and it rarely meets one.
    """
    model = model.cpu().eval()
    hf_info = save_hf_model(model, tokenizer, out_dir / HF_DIR)
    fp32_onnx = export_onnx(
        model, setup.latency_inputs, setup.input_names, scratch / "student.onnx"
    )
    for rewrite in graph_passes:
        fp32_onnx = rewrite(fp32_onnx, scratch)
    int8_path = quantize_onnx_int8(fp32_onnx, out_dir / ONNX_INT8)
    ort_lat = time_onnx(
        int8_path, setup.latency_inputs, threads=setup.threads, runtime="onnxruntime-int8"
    )
    torch_int8 = quantize_torch_int8(model)
    torch_lat = time_torch(
        torch_int8, setup.latency_inputs, threads=setup.threads, runtime="torch-int8"
    )
    if runtime == QuantRuntime.ONNX:
        chosen = ort_lat
    elif runtime == QuantRuntime.TORCH:
        chosen = torch_lat
    else:
        use_torch = auto_picks_torch(
            ort_ms=ort_lat.ms_per_batch,
            torch_ms=torch_lat.ms_per_batch,
            ort_mb=size_mb(int8_path),
            torch_mb=weights_mb(out_dir / HF_DIR),
            max_size_mb=max_size_mb,
        )
        chosen = torch_lat if use_torch else ort_lat
    if chosen is ort_lat:
        metrics = metrics_onnx(
            int8_path, setup.features, setup.labels, setup.batch_size, setup.pad_id, setup.threads
        )
        size = size_mb(int8_path)
        size_file = ONNX_INT8
    else:
        metrics = metrics_torch(
            torch_int8,
            setup.features,
            setup.labels,
            setup.batch_size,
            setup.pad_id,
            torch.device("cpu"),
        )
        # The torch int8 model is rebuilt from model/ by quantize_dynamic at load; what sits on
        # disk for it is the HF weights, so that is the size claimed for this runtime.
        size = weights_mb(out_dir / HF_DIR)
        size_file = f"{HF_DIR}/model.safetensors (+ torch quantize_dynamic at load)"
    return Measured(
        metrics=metrics,
        size_mb=size,
        latency=chosen,
        alternatives=[ort_lat, torch_lat],
        extra={
            "runtime_choice": {
                "requested": str(runtime),
                "chosen": chosen.runtime,
                "onnxruntime_int8_ms": round(ort_lat.ms_per_batch, 3),
                "torch_int8_ms": round(torch_lat.ms_per_batch, 3),
                "max_size_mb": None if max_size_mb is None else round(max_size_mb, 4),
            },
            "size_file": size_file,
            # What a server of the chosen runtime reads besides the weights: the tokenizer.
            "serving_files_mb": round(size + _tokenizer_mb(out_dir / HF_DIR), 4),
            "onnx_int8_size_mb": round(size_mb(int8_path), 4),
            "hf_model_size_mb": round(weights_mb(out_dir / HF_DIR), 4),
            "hf_model": hf_info,
            "split": setup.split,
        },
    )


def _tokenizer_mb(hf_dir: Path) -> float:
    return size_mb(*(p for p in hf_dir.iterdir() if p.is_file() and "token" in p.name))
