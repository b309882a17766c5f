"""Checking an extracted HF-format model folder without loading it.

The API never imports torch: it reads `config.json` as JSON and each `*.safetensors` file's
header (8-byte little-endian length + a JSON table of tensors) to validate the file and
count parameters. Pickle-based weight files are refused by name before extraction, and so
is anything that would need `trust_remote_code` (an `auto_map` in a config, or Python files).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

# Formats that unpickle on load (arbitrary code execution) or that we cannot load safely.
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
REFUSED_SUFFIXES = frozenset({".npy", ".npz", ".h5", ".msgpack", ".py", ".pyc", ".so"})
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "vocab.txt",
        "vocab.json",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
    }
)
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class ModelCheckError(ValueError):
    """The folder is not a safe, loadable HF-format model; the message says why."""


@dataclass
class ModelInfo:
    architecture: str
    model_type: str
    num_parameters: int
    weight_files: list[str]
    config: dict[str, Any] = field(default_factory=dict)


def check_entry_name(rel: PurePosixPath) -> None:
    """Refuse unsafe files by name, before their bytes are written."""
    suffix = rel.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelCheckError(
            f"{rel.as_posix()!r} is a pickle-based checkpoint: safetensors only"
            " (convert with `model.save_pretrained(dir, safe_serialization=True)`)"
        )
    if suffix in REFUSED_SUFFIXES:
        if suffix in (".py", ".pyc", ".so"):
            raise ModelCheckError(
                f"{rel.as_posix()!r}: model archives must not contain code (remote code is not run)"
            )
        raise ModelCheckError(f"{rel.as_posix()!r}: unsupported weight format, safetensors only")


def inspect_model_dir(root: Path) -> ModelInfo:
    config_path = root / "config.json"
    if not config_path.is_file():
        raise ModelCheckError("the archive has no config.json at its top level")
    config = _read_json(config_path)
    _refuse_remote_code(config, "config.json")
    for extra in ("tokenizer_config.json", "generation_config.json", "preprocessor_config.json"):
        if (root / extra).is_file():
            _refuse_remote_code(_read_json(root / extra), extra)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelCheckError("config.json has no 'model_type'")
    architectures = config.get("architectures")
    architecture = (
        architectures[0]
        if isinstance(architectures, list) and architectures and isinstance(architectures[0], str)
        else model_type
    )
    if not any((root / name).is_file() for name in TOKENIZER_FILES):
        raise ModelCheckError(
            "no tokenizer files found: include tokenizer.json (or vocab.txt / vocab.json,"
            " or a sentencepiece model) next to config.json"
        )
    weights = sorted(p for p in root.rglob("*.safetensors") if p.is_file())
    if not weights:
        raise ModelCheckError("no *.safetensors weights found: safetensors only")
    params = sum(count_safetensors_parameters(p) for p in weights)
    return ModelInfo(
        architecture=architecture,
        model_type=model_type,
        num_parameters=params,
        weight_files=[p.relative_to(root).as_posix() for p in weights],
        config=config,
    )


def count_safetensors_parameters(path: Path) -> int:
    """Validate a safetensors file's header against its size and count its parameters."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ModelCheckError(f"{path.name}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise ModelCheckError(f"{path.name}: not a safetensors file (bad header length)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCheckError(f"{path.name}: not a safetensors file (bad header)") from exc
    if not isinstance(header, dict):
        raise ModelCheckError(f"{path.name}: not a safetensors file (bad header)")
    data_len = size - 8 - header_len
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            numel = math.prod(int(d) for d in shape)
            nbytes = numel * DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCheckError(f"{path.name}: tensor {name!r} has a bad header entry") from exc
        if not (0 <= begin <= end <= data_len) or end - begin != nbytes:
            raise ModelCheckError(f"{path.name}: tensor {name!r} lies outside the file's data")
        total += numel
    return total


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCheckError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelCheckError(f"{path.name} must be a JSON object")
    return data


def _refuse_remote_code(config: dict[str, Any], filename: str) -> None:
    if "auto_map" in config:
        raise ModelCheckError(
            f"{filename} has an 'auto_map': models that need remote code are not accepted"
        )
    for key, value in config.items():
        if "remote_code" in key.lower() and value:
            raise ModelCheckError(f"{filename} asks for remote code ({key!r}); not accepted")
