"""manifest.json: one versioned pydantic model for every writer and every reader.

The engine (and the serving bench) write it with `write_manifest`; the worker records what
was written; the server validates the record (and, lacking one, the archive's own file) with
`parse_manifest` / `read_manifest` before it reads a single field. Field names are those of
the format-1 JSON that artifacts already carry, so every existing manifest still loads.

Most fields are optional: a manifest written by the serving bench or a test names only its
labels, files and checksums. Unknown keys are kept (`extra="allow"`), so reading and writing
back loses nothing. The measurement blocks (`teacher`, `compressed`, `techniques`, ...) stay
plain JSON objects here: only the engine fills them and only people read them; the fields the
server acts on (`format_version`, `labels`, `files`, `sha256`) are typed and checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from sec_engine import safe_json
from sec_engine.artifact_contract.files import ArtifactFile, describe_files
from sec_engine.artifact_contract.layout import HF_DIR, MANIFEST_NAME, ONNX_INT8

# Bump when a reader of the previous version would misread a new manifest; readers refuse a
# version above the one they know rather than guess.
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """The manifest is not one this code can read; the message says which field and why."""


def _inside_artifact(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"must be a relative path inside the artifact, got {value!r}")
    return value


RelativePath = Annotated[str, AfterValidator(_inside_artifact)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ManifestFiles(BaseModel):
    """Which file holds what, as paths relative to the artifact (a folder ends with '/')."""

    model_config = ConfigDict(extra="allow")

    hf_model: RelativePath | None = None
    tokenizer: RelativePath | None = None
    onnx_int8: RelativePath | None = None
    onnx: RelativePath | None = None
    trace: RelativePath | None = None
    events: RelativePath | None = None
    # How model/ expresses a pruned structure: "config" or "zero_padded" (compression.hf_save).
    hf_model_format: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    # Declared in the order the engine writes them, which is the order they are dumped in.
    format_version: int = FORMAT_VERSION
    spec: dict[str, Any] | None = None
    base_model: dict[str, Any] | None = None
    labels: list[str] | None = None  # class names in logit order
    data: dict[str, Any] | None = None
    device: str | None = None
    teacher: dict[str, Any] | None = None
    compressed: dict[str, Any] | None = None
    ratios: dict[str, float] | None = None
    labels_used: int | None = None
    labels_available: int | None = None
    wall_seconds: float | None = None
    targets_met: dict[str, bool] | None = None
    techniques: dict[str, Any] | None = None
    controller: dict[str, Any] | None = None
    files: ManifestFiles = Field(default_factory=ManifestFiles)
    libraries: dict[str, str] | None = None
    plan: dict[str, Any] | None = None
    warnings: list[str] | None = None
    # Every file of the artifact but manifest.json itself (it cannot hold its own hash).
    sha256: dict[RelativePath, Sha256Hex] = Field(default_factory=dict)
    file_sizes: dict[RelativePath, int] = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if not 1 <= version <= FORMAT_VERSION:
            raise ValueError(
                f"format {version} is not one this version reads (1 to {FORMAT_VERSION})"
            )
        return version

    @property
    def serving_onnx(self) -> str:
        """The graph a server runs: the engine's int8 one, else an fp32 one."""
        return self.files.onnx_int8 or self.files.onnx or ONNX_INT8

    @property
    def tokenizer_dir(self) -> str:
        return self.files.tokenizer or HF_DIR

    def to_json(self) -> dict[str, Any]:
        """The JSON object, holding exactly the fields that were given (none filled in)."""
        return self.model_dump(mode="json", exclude_unset=True)


def parse_manifest(raw: object) -> Manifest:
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in err['loc']) or 'manifest'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ManifestError("; ".join(problems)) from exc


def read_manifest(artifact_dir: Path) -> Manifest:
    """The artifact's manifest.json, parsed with a nesting limit (it may come from an archive)."""
    try:
        raw = safe_json.loads((artifact_dir / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {MANIFEST_NAME}: {exc}") from exc
    return parse_manifest(raw)


def write_manifest(out_dir: Path, fields: dict[str, Any]) -> list[ArtifactFile]:
    """Hash every file of `out_dir`, validate `fields` plus the checksums as a Manifest of the
    current format, and write manifest.json atomically; returns the files.

    `fields` is updated to the JSON written, checksums included: the caller's copy is what the
    worker records, and the server checks the files against the record.
    """
    files = describe_files(out_dir, exclude=frozenset({MANIFEST_NAME}))
    manifest = parse_manifest(
        {
            **fields,
            "format_version": FORMAT_VERSION,
            "sha256": {f.path: f.sha256 for f in files},
            "file_sizes": {f.path: f.size_bytes for f in files},
        }
    )
    payload = manifest.to_json()
    path = out_dir / MANIFEST_NAME
    # Written under another name and renamed, so a reader never sees half a manifest.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    fields.clear()
    fields.update(payload)
    return files
