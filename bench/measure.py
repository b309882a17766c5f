"""Measuring a row's model the same way for every row: test metrics, size on disk, latency.

A row offers one or more `Candidate` runtimes for the same weights (e.g. torch fp32 and ONNX
Runtime fp32 for an fp32 model); every candidate of every row in a section is timed in
interleaved rounds (`time_interleaved`), so load from other processes hits all alike, and the
row reports its fastest candidate, with the size of exactly the file that runtime loads.
Metrics come from the engine's own evaluation code on the shared, held-out test split.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.common import THREADS
from bench.tables import Row
from sec_engine.compression.aip_ops import prune_structured
from sec_engine.compression.gates import StructuredMasks
from sec_engine.data.encoding import encode, fixed_length_batch, model_input_names, pad_id
from sec_engine.data.splits import DataBundle
from sec_engine.evaluation.latency import time_onnx, time_torch
from sec_engine.evaluation.runner import metrics_onnx, metrics_torch
from sec_engine.evaluation.size import size_mb, weights_mb
from sec_engine.export.onnx_export import export_onnx, quantize_onnx_int8
from sec_engine.export.torch_int8 import quantize_torch_int8
from sec_engine.models.arch import layer_views

LATENCY_BATCH = 32
LATENCY_SEQ = 128


@dataclass
class Candidate:
    """One way to serve a row's model: a runtime, the file(s) it loads, the tokenizer."""

    runtime: str  # torch-fp32 | torch-int8 | onnxruntime-fp32 | onnxruntime-int8
    tokenizer_dir: Path
    model_dir: Path | None = None  # HF folder (torch runtimes)
    onnx_path: Path | None = None
    size_path: Path | None = None  # what sits on disk for this runtime, when not the above
    _module: nn.Module | None = None

    def size(self) -> tuple[float, str]:
        if self.size_path is not None:
            return size_mb(self.size_path), self.size_path.name
        if self.onnx_path is not None:
            return size_mb(self.onnx_path), self.onnx_path.name
        assert self.model_dir is not None
        return weights_mb(self.model_dir), f"{self.model_dir.name}/*.safetensors"

    def module(self) -> nn.Module:
        """The torch model (int8 built by quantize_dynamic from the fp32 weights), cached."""
        if self._module is None:
            from transformers import AutoModelForSequenceClassification

            assert self.model_dir is not None
            model = AutoModelForSequenceClassification.from_pretrained(
                self.model_dir, use_safetensors=True
            ).eval()
            strip_zero_structures(model)
            self._module = quantize_torch_int8(model) if self.runtime == "torch-int8" else model
        return self._module


def tokenizer_of(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_metrics(cand: Candidate, data: DataBundle, max_len: int) -> dict[str, float]:
    """Accuracy, macro-F1, perplexity of the candidate on the held-out test split."""
    tok = tokenizer_of(cand.tokenizer_dir)
    feats = encode(tok, data.test, max_len)
    labels = np.array([e.label for e in data.test], dtype=np.int64)
    if cand.onnx_path is not None:
        return metrics_onnx(cand.onnx_path, feats, labels, 64, pad_id(tok), THREADS)
    return metrics_torch(cand.module(), feats, labels, 64, pad_id(tok), torch.device("cpu"))


def fp32_candidates(model_dir: Path, data: DataBundle, scratch: Path) -> list[Candidate]:
    """An fp32 HF model served by torch, or by ONNX Runtime from an fp32 export of it."""
    torch_c = Candidate("torch-fp32", model_dir, model_dir=model_dir)
    inputs = latency_inputs(model_dir, data)
    onnx = export_onnx(
        torch_c.module(), inputs, model_input_names(tokenizer_of(model_dir)), scratch / "fp32.onnx"
    )
    return [torch_c, Candidate("onnxruntime-fp32", model_dir, onnx_path=onnx)]


def onnx_int8_peer(model_dir: Path, data: DataBundle, scratch: Path) -> Candidate:
    """ONNX Runtime dynamic int8 PTQ of an fp32 model (what Optimum's dynamic quantizer runs:
    onnxruntime.quantization.quantize_dynamic, QInt8 weights on the engine's export scheme: per-channel,
    reduced range, activations rewritten to per-token scales, `sec_engine.export.per_token`)."""
    fp32 = fp32_candidates(model_dir, data, scratch)[1]
    assert fp32.onnx_path is not None
    int8 = quantize_onnx_int8(fp32.onnx_path, scratch / "ptq.int8.onnx")
    return Candidate("onnxruntime-int8", model_dir, onnx_path=int8)


def torch_int8_peer(model_dir: Path, scratch: Path) -> Candidate:
    """torch.ao dynamic int8 PTQ; its size is the int8 state_dict a user would torch.save."""
    cand = Candidate("torch-int8", model_dir, model_dir=model_dir)
    path = scratch / "ptq.torch-int8.pt"
    torch.save(cand.module().state_dict(), path)
    cand.size_path = path
    return cand


def latency_inputs(tokenizer_dir: Path, data: DataBundle) -> dict[str, torch.Tensor]:
    return fixed_length_batch(tokenizer_of(tokenizer_dir), data.test, LATENCY_BATCH, LATENCY_SEQ)


def time_interleaved(
    entries: Sequence[tuple[str, Candidate]], data: DataBundle, *, rounds: int, repeats: int
) -> dict[tuple[str, str], list[float]]:
    """ms/batch of every (row, candidate), each round timing all of them back to back."""
    inputs = {id(c): latency_inputs(c.tokenizer_dir, data) for _, c in entries}
    runs: dict[tuple[str, str], list[float]] = {(n, c.runtime): [] for n, c in entries}
    for r in range(rounds):
        for name, cand in entries:
            x = inputs[id(cand)]
            if cand.onnx_path is not None:
                lat = time_onnx(
                    cand.onnx_path, x, threads=THREADS, runtime=cand.runtime, repeats=repeats
                )
            else:
                lat = time_torch(
                    cand.module(), x, threads=THREADS, runtime=cand.runtime, repeats=repeats
                )
            runs[(name, cand.runtime)].append(round(lat.ms_per_batch, 3))
        print(f"[latency] round {r + 1}/{rounds} done", file=sys.stderr)
    return runs


def apply_latency(
    rows: Sequence[Row],
    candidates: dict[str, list[Candidate]],
    runs: dict[tuple[str, str], list[float]],
) -> None:
    """Each row takes its fastest candidate: latency median, runtime, and that file's size."""
    for row in rows:
        options = candidates.get(row.name, [])
        if not options:
            continue
        medians = {c.runtime: statistics.median(runs[(row.name, c.runtime)]) for c in options}
        best = min(options, key=lambda c: medians[c.runtime])
        row.runtime = best.runtime
        row.latency_ms = round(medians[best.runtime], 3)
        size, files = best.size()
        row.size_mb, row.size_files = round(size, 4), files
        row.extra["latency_runs_ms"] = {c.runtime: runs[(row.name, c.runtime)] for c in options}


def release(candidates: dict[str, list[Candidate]]) -> None:
    for options in candidates.values():
        for c in options:
            c._module = None


def strip_zero_structures(model: nn.Module) -> int:
    """Physically remove all-zero heads and FFN neurons (in place); returns how many.

    A pruned model saved in HF format is zero-padded back to the config's shape (see
    `sec_engine.compression.hf_save`); the zeros compute nothing, so slicing them out again
    gives the same logits with the pruned model's real cost, which is what its latency is.
    """
    views = layer_views(model)
    masks = StructuredMasks.ones(model)
    removed = 0
    with torch.no_grad():
        for v, heads, neurons in zip(views, masks.heads, masks.neurons, strict=True):
            d = v.head_dim
            for h in range(v.num_heads):
                rows = slice(h * d, (h + 1) * d)
                parts = [v.query.weight[rows], v.key.weight[rows], v.value.weight[rows]]
                parts += [v.attn_out.weight[:, rows]]
                parts += [m.bias[rows] for m in (v.query, v.key, v.value) if m.bias is not None]
                if all(bool((t == 0).all()) for t in parts):
                    heads[h] = 0.0
            zero_in = (v.ffn_in.weight == 0).all(dim=1) & (v.ffn_out.weight == 0).all(dim=0)
            if v.ffn_in.bias is not None:
                zero_in &= v.ffn_in.bias == 0
            neurons[zero_in] = 0.0
            removed += int((heads == 0).sum()) + int((neurons == 0).sum())
    if removed:
        prune_structured(model, masks)
    return removed
