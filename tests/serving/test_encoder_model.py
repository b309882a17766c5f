"""Tokenization with `tokenizers` matches transformers' tokenizer; the loaded ONNX model
predicts with the artifact's labels; bad artifacts give clear load errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.serving.encoder import TextEncoder, max_length_for
from app.serving.errors import ModelLoadError
from app.serving.model import load_model, resolve_labels
from sec_engine.artifact_contract import ManifestError, parse_manifest
from tests.serving.tiny_artifact import LABELS, MAX_LENGTH, TinyArtifact, sample_inputs

pytestmark = pytest.mark.unit

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def test_encoding_matches_the_transformers_tokenizer(tiny: TinyArtifact) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny.directory / "model")
    enc = TextEncoder.from_dir(tiny.directory / "model", NAMES)
    inputs: list[str | tuple[str, str]] = [
        ("good film", "the plot was dull"),
        "a",
        "great acting in a boring story, is it?",
    ]
    ours = enc.encode(inputs)
    theirs = hf(["good film", "a", "great acting in a boring story, is it?"], padding=True)
    pair = hf("good film", "the plot was dull")
    n = len(pair["input_ids"])
    assert ours["input_ids"][0, :n].tolist() == pair["input_ids"]
    assert ours["token_type_ids"][0, :n].tolist() == pair["token_type_ids"]
    for row in (1, 2):
        ids = hf(inputs[row])["input_ids"]
        assert ours["input_ids"][row, : len(ids)].tolist() == ids
        assert ours["attention_mask"][row].sum() == len(ids)
    # Padded to the longest sequence of the batch, with the pad id and a zero mask.
    longest = max(len(pair["input_ids"]), *(len(t) for t in theirs["input_ids"]))
    assert ours["input_ids"].shape == (3, longest)
    assert ours["input_ids"].dtype == np.int64
    assert ours["input_ids"][1, -1] == hf.pad_token_id


def test_long_inputs_are_truncated_to_the_model_length(tiny: TinyArtifact) -> None:
    enc = TextEncoder.from_dir(tiny.directory / "model", NAMES)
    assert enc.max_length == MAX_LENGTH
    arrays = enc.encode(["good " * 500, ("bad " * 300, "film " * 300)])
    assert arrays["input_ids"].shape == (2, MAX_LENGTH)
    assert arrays["attention_mask"].all()


def test_max_length_rules() -> None:
    assert max_length_for({"max_position_embeddings": 512}, {"model_max_length": 128}) == 128
    assert max_length_for({"max_position_embeddings": 512}, {"model_max_length": int(1e30)}) == 512
    roberta = {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    assert max_length_for(roberta, {}) == 512
    with pytest.raises(ModelLoadError):
        max_length_for({}, {})


def test_loaded_model_predicts_with_the_artifact_labels(tiny: TinyArtifact) -> None:
    model = load_model(tiny.directory, parse_manifest(tiny.manifest), threads=1)
    assert model.labels == LABELS
    preds = model.predict(["good great film", "awful dull plot", ("good film", "the plot")])
    assert [p.label for p in preds[:2]] == ["positive", "negative"]
    for p in preds:
        assert set(p.probabilities) == set(LABELS)
        assert abs(sum(p.probabilities.values()) - 1.0) < 1e-6


def test_batched_outputs_match_one_at_a_time(tiny: TinyArtifact) -> None:
    """Dynamic int8 quantises activations with a scale computed over the whole batch tensor
    (padding included), so batching moves probabilities slightly, never the labels here."""
    model = load_model(tiny.directory, parse_manifest(tiny.manifest), threads=1)
    inputs = [(x["text"], x["text_pair"]) if isinstance(x, dict) else x for x in sample_inputs(40)]
    batched = model.probabilities(inputs)
    single = np.concatenate([model.probabilities([x]) for x in inputs])
    assert (batched.argmax(1) == single.argmax(1)).all()
    assert np.abs(batched - single).max() < 0.01


def test_labels_fall_back_to_config_id2label() -> None:
    config = {"id2label": {"1": "pos", "0": "neg"}}
    assert resolve_labels(None, config) == ["neg", "pos"]
    assert resolve_labels([], config) == ["neg", "pos"]
    assert resolve_labels(["a", "b"], config) == ["a", "b"]
    with pytest.raises(ModelLoadError, match="names no labels"):
        resolve_labels(None, {})


def test_label_count_mismatch_fails_the_load(tiny: TinyArtifact, tmp_path: Path) -> None:
    directory = tmp_path / "a"
    shutil.copytree(tiny.directory, directory)
    manifest = parse_manifest({**tiny.manifest, "labels": ["only", "two"]})
    with pytest.raises(ModelLoadError, match="3 logits per input but the artifact names 2"):
        load_model(directory, manifest, threads=1)


def test_missing_or_non_onnx_model_file_fails_the_load(tiny: TinyArtifact, tmp_path: Path) -> None:
    directory = tmp_path / "a"
    shutil.copytree(tiny.directory, directory)
    for files, message in (
        ({"onnx_int8": "model/model.safetensors"}, "no ONNX model"),
        ({"onnx_int8": "absent.onnx"}, "no ONNX model"),
    ):
        with pytest.raises(ModelLoadError, match=message):
            load_model(directory, parse_manifest({**tiny.manifest, "files": files}), threads=1)
    # A path out of the artifact never reaches the loader: the contract refuses the manifest.
    for escape in ("../x.onnx", "/etc/x.onnx"):
        with pytest.raises(ManifestError, match=r"files\.onnx_int8: .*relative path"):
            parse_manifest({**tiny.manifest, "files": {"onnx_int8": escape}})
    (directory / "model" / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no tokenizer\.json"):
        load_model(directory, parse_manifest(tiny.manifest), threads=1)
    assert json.loads((tiny.directory / "manifest.json").read_text())["labels"] == LABELS
