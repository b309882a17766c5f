"""Model size as the bytes of real files on disk (never a parameter count times 4)."""

from __future__ import annotations

from pathlib import Path

MB = 1024 * 1024


def size_mb(*paths: Path) -> float:
    """Total size of the given files, or of every file under the given directories, in MiB."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            total += path.stat().st_size
    return total / MB


def weights_mb(model_dir: Path) -> float:
    """Size of the weight files of an HF model folder (safetensors only)."""
    return size_mb(*sorted(model_dir.glob("*.safetensors")))
