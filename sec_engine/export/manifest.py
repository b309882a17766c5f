"""Checksums, library versions and the manifest file of an artifact directory."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from sec_engine.result import ArtifactFile

MANIFEST_NAME = "manifest.json"
_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "onnx", "onnxruntime", "numpy")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(
    out_dir: Path, *, exclude: tuple[str, ...] = (MANIFEST_NAME,)
) -> list[ArtifactFile]:
    """Every regular file under out_dir (sorted, forward-slash paths) with size and sha256."""
    files = []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(out_dir).as_posix()
        if rel in exclude:
            continue
        files.append(ArtifactFile(rel, path.stat().st_size, sha256_file(path)))
    return files


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temporary name and rename, so a reader never sees half a manifest."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
