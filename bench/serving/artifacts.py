"""Building servable artifacts outside the job pipeline (torch-side; never imported by the API).

The layout and the manifest are the artifact contract's (sec_engine/artifact_contract/) and
the archive is the worker's (workers/archive.py), so what the bench and the serving tests deploy
is laid out, checksummed and packed exactly as what a job produces:

    model/              HF-format model + tokenizer (save_pretrained: config.json,
                        model.safetensors, tokenizer.json, tokenizer_config.json)
    model.int8.onnx     the engine's int8 export (manifest files.onnx_int8), or
    model.onnx          fp32 ONNX (manifest files.onnx) for a model served unquantized
    manifest.json       labels, files, sha256 of every file
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from sec_engine.artifact_contract import (
    HF_DIR,
    ONNX_FP32,
    ONNX_INT8,
    write_manifest,
)
from sec_engine.export.onnx_export import export_onnx as engine_export
from sec_engine.export.onnx_export import quantize_onnx_int8
from workers.archive import make_archive


def export_onnx(model: nn.Module, tokenizer: Any, path: Path, *, int8: bool) -> Path:
    """The engine's ONNX export (dynamic batch and sequence axes) and, for `int8`, its int8
    quantization (`sec_engine.export.onnx_export`), so a deployed bench model runs the graph
    a job ships."""
    model = model.cpu().eval()
    names = [
        n
        for n in tokenizer.model_input_names
        if n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    example = tokenizer(
        ["an example", "a second, longer example text"], padding=True, return_tensors="pt"
    )
    fp32 = path.with_name(path.stem + ".fp32.onnx") if int8 else path
    engine_export(model, {n: example[n] for n in names}, names, fp32)
    if int8:
        quantize_onnx_int8(fp32, path)
        fp32.unlink()
    return path


def write_artifact_dir(
    model: Any,
    tokenizer: Any,
    out_dir: Path,
    *,
    int8: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the artifact directory and its manifest; return the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir / HF_DIR)
    tokenizer.save_pretrained(out_dir / HF_DIR)
    onnx_name = ONNX_INT8 if int8 else ONNX_FP32
    export_onnx(model, tokenizer, out_dir / onnx_name, int8=int8)
    id2label = model.config.id2label
    manifest: dict[str, Any] = {
        "labels": [id2label[i] for i in range(len(id2label))],
        "files": {
            "hf_model": f"{HF_DIR}/",
            "tokenizer": f"{HF_DIR}/",
            ("onnx_int8" if int8 else "onnx"): onnx_name,
        },
        **(extra or {}),
    }
    write_manifest(out_dir, manifest)  # adds format_version and the checksums
    return manifest


def pack(out_dir: Path, dest: Path, top: str) -> str:
    """The worker's archive of `out_dir`; returns its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return make_archive(out_dir, dest, top=top)
