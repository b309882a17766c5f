"""What goes into and comes out of one engine run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Re-exported: an EngineResult lists its files as the contract describes them.
from sec_engine.artifact_contract.files import ArtifactFile as ArtifactFile


@dataclass(frozen=True)
class ResolvedInputs:
    """The spec's references, resolved by the caller to things the engine can open.

    `model` is a local directory holding an HF-format model (safetensors) or a built-in name
    or hub id that `sec_engine.models.registry` resolves. Datasets are CSV / JSONL files.
    """

    model: str
    train_path: Path
    validation_path: Path | None = None
    unlabelled_path: Path | None = None


@dataclass(frozen=True)
class EngineResult:
    out_dir: Path
    manifest: dict[str, Any]
    files: list[ArtifactFile] = field(default_factory=list)
    targets_met: dict[str, bool] = field(default_factory=dict)
