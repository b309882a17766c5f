"""Int4 weight-only quantization of the ONNX artifact: the ops on a graph, and the technique
switched on in a job through its spec section alone."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sec_engine.artifact_contract.onnx_runtime import cpu_session
from sec_engine.compression.aip_ops import prune_structured
from sec_engine.compression.gates import StructuredMasks
from sec_engine.compression.int4_ops import (
    INT4_GATHER_OP,
    INT4_OP,
    quantize_int4,
    quantizer_classes,
)
from sec_engine.export.onnx_export import export_onnx, quantize_onnx_int8
from sec_engine.pipeline import run_job
from sec_engine.result import ResolvedInputs
from sec_engine.spec import Int4Config, JobSpec
from sec_engine.stages.compress import estimate_int8_mb
from tests.doubles import RecordingCallbacks

pytestmark = pytest.mark.unit

TEXTS = ["a great superb film", "an awful dull plot and boring acting", "the story was fine"]
NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def _logits(path: Path, enc: dict[str, torch.Tensor]) -> np.ndarray:
    out: np.ndarray = cpu_session(path, 1).run(None, {n: enc[n].numpy() for n in NAMES})[0]
    return out


def test_weight_matmuls_go_to_four_bits_and_the_graph_still_answers(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    masks = StructuredMasks.ones(model)
    masks.neurons[0][:35] = 0  # FFN widths 29 and 54: not multiples of the block size
    masks.neurons[1][:10] = 0
    prune_structured(model, masks)
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    fp32 = export_onnx(model, enc, NAMES, tmp_path / "fp32.onnx")

    report = quantize_int4(
        fp32, tmp_path / "int4.onnx", block_size=32, symmetric=True, accuracy_level=0
    )

    ops = [node.op_type for node in onnx.load(str(tmp_path / "int4.onnx")).graph.node]
    # Per layer: q, k, v, attention output, FFN in and out; the two attention products stay.
    assert (report.quantized, report.kept, report.embeddings) == (2 * 6, 2 * 2, 0)
    assert ops.count(INT4_OP) == 12
    assert (tmp_path / "int4.onnx").stat().st_size < fp32.stat().st_size
    with torch.no_grad():
        reference = model(**enc).logits.numpy()
    assert np.abs(_logits(tmp_path / "int4.onnx", enc) - reference).max() < 0.1


def test_embedding_tables_go_to_four_bits_and_int8_still_quantizes_the_rest(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    """Embeddings only: the three constant-table Gathers become GatherBlockQuantized, the
    MatMuls stay for the int8 pass, which must still run on a graph with com.microsoft ops."""
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    fp32 = export_onnx(model, enc, NAMES, tmp_path / "fp32.onnx")

    int4 = tmp_path / "emb4.onnx"
    report = quantize_int4(
        fp32,
        int4,
        matmuls=False,
        embeddings=True,
        block_size=16,
        symmetric=True,
        accuracy_level=0,
    )
    assert (report.quantized, report.kept, report.embeddings) == (
        0,
        2 * 8,
        3,
    )  # 2 layers: 6 weight MatMuls, 2 products
    both = quantize_onnx_int8(int4, tmp_path / "emb4.int8.onnx")
    plain = quantize_onnx_int8(fp32, tmp_path / "plain.int8.onnx")

    ops = [node.op_type for node in onnx.load(str(both)).graph.node]
    assert ops.count(INT4_GATHER_OP) == 3
    assert ops.count("MatMul") == 2 * 2  # int8 took the weight MatMuls; the products stay
    assert both.stat().st_size < plain.stat().st_size
    with torch.no_grad():
        reference = model(**enc).logits.numpy()
    assert np.abs(_logits(both, enc) - reference).max() < 0.1


def test_int4_with_nothing_to_quantize_is_refused() -> None:
    with pytest.raises(ValueError, match="neither matmuls nor embeddings"):
        Int4Config(enabled=True, matmuls=False, embeddings=False)
    assert not Int4Config(matmuls=False, embeddings=False).enabled  # off: nothing to check


def test_importing_the_quantizer_leaves_the_root_logger_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its module calls logging.basicConfig(INFO) on import: a process without logging set
    up would print a line per tensor of every later quantization."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    monkeypatch.delitem(
        sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", raising=False
    )
    quantizer_classes()
    assert root.handlers == []
    assert root.level == logging.WARNING


def test_a_job_with_int4_on_ships_a_servable_four_bit_onnx_file(
    tiny_bert_dir: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    """Switched on by its spec section only; everything else of the job as it was."""
    spec = JobSpec.model_validate(
        {
            "dataset": "x",
            "training": {"batch_size": 16, "max_seq_len": 32, "teacher_epochs": 1},
            "targets": {"latency_batch_size": 4, "latency_seq_len": 16},
            "techniques": {
                "tal": {"enabled": False},
                "ada": {"enabled": False},
                "sqd": {"enabled": False, "runtime": "onnxruntime"},
                "aip": {"enabled": False},
                "int4": {"enabled": True, "block_size": 16},
            },
        }
    )
    out = tmp_path / "out"
    result = run_job(
        spec,
        ResolvedInputs(model=str(tiny_bert_dir), train_path=sentiment_csv),
        out,
        RecordingCallbacks(),
    )
    m = result.manifest
    assert m["techniques"]["int4"] == {
        "int4_matmuls": 12,
        "float_matmuls": 4,
        "int4_embeddings": 0,
        "matmuls": True,
        "embeddings": False,
        "block_size": 16,
        "symmetric": True,
        "accuracy_level": 0,
    }
    onnx_file = out / "model.int8.onnx"
    ops = {node.op_type for node in onnx.load(str(onnx_file)).graph.node}
    assert INT4_OP in ops
    assert "MatMulIntegerToFloat" in ops  # the int8 pass ran after (per-token, `export.per_token`)
    # What was measured is the file that ships, and it is served as any ONNX artifact is.
    assert m["compressed"]["runtime_choice"]["chosen"] == "onnxruntime-int8"
    assert m["compressed"]["size_mb"] == m["compressed"]["onnx_int8_size_mb"]
    tok = AutoTokenizer.from_pretrained(out / "model")
    hf = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    with torch.no_grad():
        reference = hf(**enc).logits.numpy()
    assert np.abs(_logits(onnx_file, enc) - reference).max() < 0.5


def test_the_loops_size_estimate_counts_four_bit_embeddings(tiny_bert_dir: Path) -> None:
    """The controller steers on the estimated size: int4 embeddings must lower it by what
    4 bits (and one fp32 scale per block) save on the embedding tables, and nothing else."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    tables = sum(
        p.numel() for n, p in model.named_parameters() if "embeddings" in n and p.ndim == 2
    )
    int8 = estimate_int8_mb(model)
    off = estimate_int8_mb(model, int4=Int4Config(embeddings=True))  # not enabled
    emb4 = estimate_int8_mb(
        model, int4=Int4Config(enabled=True, matmuls=False, embeddings=True, block_size=16)
    )
    both = estimate_int8_mb(model, int4=Int4Config(enabled=True, embeddings=True, block_size=16))
    assert off == int8
    saved = tables * (1 - (0.5 + 4 / 16)) / (1024 * 1024)
    assert abs((int8 - emb4) - saved) < 1e-9
    assert both < emb4
