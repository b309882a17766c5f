"""The versioned Manifest: existing manifests load and round-trip unchanged, the fields the
server acts on are checked, the writer hashes through the walker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sec_engine.artifact_contract import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ManifestError,
    parse_manifest,
    read_manifest,
    write_manifest,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
# Manifests written by real engine runs before the contract existed.
ENGINE_MANIFESTS = sorted((ROOT / "bench" / "results").glob("*.manifest.json"))


def test_there_are_engine_manifests_to_check() -> None:
    assert ENGINE_MANIFESTS


@pytest.mark.parametrize("path", ENGINE_MANIFESTS, ids=lambda p: p.name)
def test_existing_engine_manifests_load_and_round_trip_unchanged(path: Path) -> None:
    text = path.read_text()
    manifest = parse_manifest(json.loads(text))
    assert manifest.format_version == 1
    # Rotten Tomatoes sentiment, or the agreement pairs of the sentence-pair benchmark.
    assert manifest.labels in (["negative", "positive"], ["agree", "disagree"])
    assert manifest.serving_onnx == "model.int8.onnx"
    assert manifest.tokenizer_dir == "model/"
    assert "model.int8.onnx" in manifest.sha256
    # Same keys, same order, same values: reading and writing back changes nothing.
    assert json.dumps(manifest.to_json(), indent=2) == json.dumps(json.loads(text), indent=2)


@pytest.mark.parametrize(
    "record",
    [
        {},  # a record with no manifest
        {"targets_met": {"max_size_mb": True}},  # tests/app/artifacts_util.py
        {"spec": {"task": "x"}, "compressed": {"accuracy": 0.9}},  # tests/workers fake engine
        {"spec": {}, "train_sha256": "ab", "wall_seconds": 3, "device": "fake"},  # reliability
    ],
)
def test_partial_records_load_and_keep_unknown_keys(record: dict[str, object]) -> None:
    manifest = parse_manifest(record)
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.sha256 == {}
    dumped = manifest.to_json()
    assert set(dumped) == set(record)
    assert dumped.get("train_sha256") == record.get("train_sha256")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"format_version": FORMAT_VERSION + 1}, "format_version: .*not one this version reads"),
        ({"format_version": 0}, "format_version"),
        ({"files": {"tokenizer": "../../etc"}}, r"files\.tokenizer: .*relative path"),
        ({"sha256": {"/abs": "0" * 64}}, "sha256"),
        ({"sha256": {"model.int8.onnx": "not-a-digest"}}, "sha256"),
        ({"labels": "negative,positive"}, "labels"),
        ([], "manifest"),
    ],
)
def test_what_the_server_acts_on_is_checked(record: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(record)


def test_write_manifest_hashes_validates_and_updates_the_callers_copy(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model.int8.onnx").write_bytes(b"graph")
    (tmp_path / MANIFEST_NAME).write_text("stale, not hashed")
    fields: dict[str, object] = {"labels": ["a", "b"], "files": {"onnx_int8": "model.int8.onnx"}}
    files = write_manifest(tmp_path, fields)
    assert [f.path for f in files] == ["model.int8.onnx", "model/config.json"]
    written = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert written == fields
    assert next(iter(written)) == "format_version"
    assert written["sha256"] == {f.path: f.sha256 for f in files}
    assert written["file_sizes"] == {"model.int8.onnx": 5, "model/config.json": 2}
    assert read_manifest(tmp_path).labels == ["a", "b"]
    with pytest.raises(ManifestError, match="labels"):
        write_manifest(tmp_path, {"labels": [1, 2]})
