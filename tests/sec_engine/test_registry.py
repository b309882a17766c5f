"""Safe model loading: safetensors only, no remote code, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sec_engine.errors import ModelLoadError, SpecError
from sec_engine.models import registry

pytestmark = pytest.mark.unit


def test_loads_a_local_safetensors_model(tiny_bert_dir: Path) -> None:
    loaded = registry.load_model(str(tiny_bert_dir), ["neg", "pos"])
    assert loaded.model.config.id2label == {0: "neg", 1: "pos"}
    assert loaded.tokenizer("good film")["input_ids"]


def test_refuses_pickle_only_folders_without_unpickling(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "pwned"
    # A file that would create `marker` if anything unpickled it.
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (folder / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(ModelLoadError, match="pickle"):
        registry.load_model(str(folder), ["a", "b"])
    assert not marker.exists()


def test_refuses_remote_code_configs(tiny_bert_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "remote"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="auto_map"):
        registry.load_model(str(folder), ["a", "b"])
    config.pop("auto_map")
    config["model_type"] = "evil-net"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="model_type"):
        registry.load_model(str(folder), ["a", "b"])


def test_unknown_references_fail_cleanly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown model"):
        registry.resolve_source("no such model")
    assert registry.resolve_source("org/name") == "org/name"  # a hub id, resolved at load
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        registry.resolve_source(str(tmp_path / "file.txt"))
    with pytest.raises(ModelLoadError, match="files of model 'mdl_gone' are missing") as lost:
        registry.resolve_source(str(tmp_path / "uploads" / "mdl_gone"))
    assert str(tmp_path) not in str(lost.value)  # no server path in a job's error


def test_device_selection_never_falls_back_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.torch.cuda, "is_available", lambda: False)
    assert registry.select_device("auto").type == "cpu"
    assert registry.select_device("cpu").type == "cpu"
    with pytest.raises(SpecError):
        registry.select_device("cuda")


def test_config_check_uses_the_engines_supported_types() -> None:
    """The list the upload API checks too (sec_engine.models.supported)."""
    from sec_engine.models.supported import SUPPORTED_MODEL_TYPES

    for model_type in SUPPORTED_MODEL_TYPES:
        registry.check_config({"model_type": model_type})
    # Known to transformers, but not an encoder the engine can compress.
    with pytest.raises(ModelLoadError, match="supported types are bert, camembert"):
        registry.check_config({"model_type": "gpt2"})
