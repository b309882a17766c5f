"""export_compressed: the "auto" runtime honours the job's size target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from sec_engine.data.encoding import encode, pad_id
from sec_engine.data.splits import Example
from sec_engine.export.artifact import auto_picks_torch, export_compressed, measure_setup
from sec_engine.spec import QuantRuntime
from tests.sec_engine.conftest import make_tokenizer

pytestmark = pytest.mark.unit


def _setup(tok_dir: Path):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    examples = [Example("a great superb film", None, 1), Example("an awful dull plot", None, 0)]
    return tok, measure_setup(
        tok,
        examples,
        encode(tok, examples, 16),
        batch_size=2,
        pad_id=pad_id(tok),
        latency_batch=2,
        latency_seq_len=16,
        max_positions=128,
        split="test",
    )


def test_auto_picks_the_runtime_whose_file_meets_the_size_target(tmp_path: Path) -> None:
    tok_dir = tmp_path / "tok"
    vocab = len(make_tokenizer(tok_dir))
    # Wide enough that weights, not the ONNX graph's own bytes, dominate the file sizes.
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=64,
        num_labels=2,
    )
    model = BertForSequenceClassification(config).eval()
    tok, setup = _setup(tok_dir)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    probe = export_compressed(model, tok, setup, tmp_path / "probe", scratch, QuantRuntime.AUTO)
    onnx_mb, hf_mb = probe.extra["onnx_int8_size_mb"], probe.extra["hf_model_size_mb"]
    assert onnx_mb < hf_mb  # int8 file vs fp32 weights that torch quantizes at load
    limit = (onnx_mb + hf_mb) / 2  # only the ONNX file fits
    m = export_compressed(
        model, tok, setup, tmp_path / "out", scratch, QuantRuntime.AUTO, max_size_mb=limit
    )
    assert m.extra["runtime_choice"]["chosen"] == "onnxruntime-int8"
    assert m.extra["runtime_choice"]["max_size_mb"] == pytest.approx(limit, abs=1e-4)
    assert m.size_mb <= limit
    assert np.isfinite(m.metrics["accuracy"])
    # An explicit runtime is obeyed whatever the size.
    forced = export_compressed(
        model, tok, setup, tmp_path / "forced", scratch, QuantRuntime.TORCH, max_size_mb=limit
    )
    assert forced.extra["runtime_choice"]["chosen"] == "torch-int8"


@pytest.mark.parametrize(
    ("torch_ms", "torch_mb", "limit", "picks_torch"),
    [
        (50.0, 40.0, None, True),  # clearly faster, no size target
        (97.0, 40.0, None, False),  # within the timing margin: ONNX Runtime
        (50.0, 40.0, 50.0, True),  # both files meet the target
        (50.0, 40.0, 20.0, False),  # only the ONNX file meets it
        # Neither meets it: the ONNX file (11 MB) is nearer; a faster torch must not ship
        # 40 MB for a 10 MB target.
        (50.0, 40.0, 10.0, False),
        (50.0, 9.0, 5.0, True),  # neither meets it, and torch's file is the smaller
    ],
)
def test_auto_treats_the_size_target_as_a_constraint(
    torch_ms: float, torch_mb: float, limit: float | None, picks_torch: bool
) -> None:
    choice = auto_picks_torch(
        ort_ms=100.0, torch_ms=torch_ms, ort_mb=11.0, torch_mb=torch_mb, max_size_mb=limit
    )
    assert choice is picks_torch
