"""From an artifact record to a verified directory on local disk.

Order matters, and is the point of this module: nothing is loaded from an archive before
(1) the archive's sha256 matches the one recorded when the worker stored it, and (2) every
extracted file's sha256 matches the recorded manifest's `sha256` table (the one place an
artifact's file hashes are kept). Files are listed by the artifact contract's walker, the one
the engine hashed them with and the worker archived them with. Extraction goes through the
same hardened extractor as model uploads (no absolute paths, `..`, links, device files; entry
and ratio caps), into a temporary folder that is renamed into place only once everything
checked out.

Extracted artifacts are cached per archive sha256 under `settings.serving_dir`, so a second
deployment of the same artifact (or a reload after LRU eviction) skips the extraction; the
file checksums are still verified against the database record before every load.

Archive layout (workers/archive.py): every entry under one top folder (`<job_id>/`), holding
`manifest.json`, `model/` (HF format + tokenizer), `model.int8.onnx`, `trace.jsonl`, ...
An archive without the top folder (manifest.json at the root) is accepted too.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.models.archive import ArchiveError, Limits, extract_archive, remove_tree
from app.serving.errors import ModelLoadError
from app.storage import BlobStore
from sec_engine.artifact_contract import (
    MANIFEST_NAME,
    ArtifactLayoutError,
    Manifest,
    ManifestError,
    parse_manifest,
    read_manifest,
    sha256_file,
    walk_files,
)

_VERIFIED_MARKER = ".sec-verified"


@dataclass(frozen=True)
class ArtifactRef:
    """What the database says about an artifact: the trusted side of every check."""

    artifact_id: str
    storage_key: str
    sha256: str
    manifest: Manifest = field(default_factory=Manifest)

    @classmethod
    def from_record(
        cls, artifact_id: str, storage_key: str, sha256: str, manifest: object
    ) -> ArtifactRef:
        """The record's manifest validated by the artifact contract, or ModelLoadError."""
        try:
            parsed = parse_manifest(manifest)
        except ManifestError as exc:
            raise ModelLoadError(f"artifact {artifact_id}: invalid manifest: {exc}") from exc
        return cls(artifact_id, storage_key, sha256, parsed)


def prepare_artifact(
    ref: ArtifactRef, store: BlobStore, root: Path, *, max_entries: int, max_ratio: float
) -> Path:
    """A local directory with the artifact's files, every one checked against the record.

    Raises ModelLoadError naming the first problem; nothing is left half-extracted.
    """
    if not ref.sha256:
        raise ModelLoadError(f"artifact {ref.artifact_id} has no recorded sha256; refusing it")
    final = root / "artifacts" / ref.sha256
    recorded = ref.manifest.sha256
    if not (recorded and (final / _VERIFIED_MARKER).is_file()):
        # Without file hashes in the record, only the archive hash vouches for the files,
        # so a cached copy cannot be re-checked: extract afresh from the verified archive.
        _extract_verified(ref, store, root, final, limits=(max_entries, max_ratio))
    verify_files(final, recorded or _archive_hashes(final, ref.artifact_id), ref.artifact_id)
    return final


def _extract_verified(
    ref: ArtifactRef, store: BlobStore, root: Path, final: Path, limits: tuple[int, float]
) -> None:
    tmp_root = root / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=tmp_root, prefix="extract-"))
    try:
        archive = _local_archive(ref, store, work)
        actual = sha256_file(archive)
        if actual != ref.sha256:
            raise ModelLoadError(
                f"artifact {ref.artifact_id}: archive sha256 mismatch (recorded {ref.sha256},"
                f" stored file has {actual}); the file was altered or damaged, refusing to load it"
            )
        extracted = work / "x"
        extracted.mkdir()
        max_entries, max_ratio = limits
        # The archive is vouched for by its recorded hash, so the caps are a second line of
        # defence only: the ratio cap bounds the total, no separate byte cap is needed.
        caps = Limits(max_entries=max_entries, max_total_bytes=sys.maxsize, max_ratio=max_ratio)
        try:
            extract_archive(archive, extracted, caps)
        except ArchiveError as exc:
            raise ModelLoadError(f"artifact {ref.artifact_id}: unsafe archive: {exc}") from exc
        top = _artifact_root(extracted, ref.artifact_id)
        verify_files(
            top, ref.manifest.sha256 or _archive_hashes(top, ref.artifact_id), ref.artifact_id
        )
        (top / _VERIFIED_MARKER).write_text(ref.sha256 + "\n")
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = final.parent / f".{final.name}.{uuid.uuid4().hex}"
        os.replace(top, staged)
        try:
            os.rename(staged, final)  # atomic; fails if a concurrent warm-up got there first
        except OSError:
            if not (final / _VERIFIED_MARKER).is_file():
                raise
            remove_tree(staged)
    finally:
        remove_tree(work)


def _local_archive(ref: ArtifactRef, store: BlobStore, work: Path) -> Path:
    try:
        local = store.path_for(ref.storage_key)
        if local is not None:
            if not local.is_file():
                raise ModelLoadError(f"artifact {ref.artifact_id}: its archive is missing")
            return local
        dest = work / "archive.tar.gz"
        with dest.open("wb") as out:
            for chunk in store.iter_bytes(ref.storage_key):
                out.write(chunk)
        return dest
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"artifact {ref.artifact_id}: cannot read its archive: {exc}") from exc


def _artifact_root(extracted: Path, artifact_id: str) -> Path:
    if (extracted / MANIFEST_NAME).is_file():
        return extracted
    children = list(extracted.iterdir())
    if len(children) == 1 and (children[0] / MANIFEST_NAME).is_file():
        return children[0]
    raise ModelLoadError(f"artifact {artifact_id}: the archive has no {MANIFEST_NAME}")


def _archive_hashes(top: Path, artifact_id: str) -> dict[str, str]:
    """The archive's own manifest's hashes, for a record that holds none (the archive's hash,
    checked against the record, vouches for them)."""
    try:
        table = read_manifest(top).sha256
    except ManifestError as exc:
        raise ModelLoadError(f"artifact {artifact_id}: {exc}") from exc
    if not table:
        raise ModelLoadError(f"{MANIFEST_NAME} lists no sha256 for the artifact's files")
    return table


def verify_files(top: Path, expected: Mapping[str, str], artifact_id: str) -> None:
    """Every file present is expected and matches; every expected file is present.

    `manifest.json` cannot list its own hash, so it may be absent from `expected`.
    """
    if not expected:
        raise ModelLoadError(f"artifact {artifact_id}: no sha256 recorded for its files")
    try:
        names = walk_files(top)
    except ArtifactLayoutError as exc:
        raise ModelLoadError(f"artifact {artifact_id}: {exc}") from exc
    present: set[str] = set()
    for name in names:
        if name == _VERIFIED_MARKER:
            continue
        present.add(name)
        want = expected.get(name)
        if want is None:
            if name == MANIFEST_NAME:
                continue
            raise ModelLoadError(f"artifact {artifact_id}: {name} is not listed in the manifest")
        got = sha256_file(top / name)
        if got != want:
            raise ModelLoadError(
                f"artifact {artifact_id}: sha256 mismatch for {name} (manifest {want}, file"
                f" {got}); refusing to load it"
            )
    missing = sorted(set(expected) - present)
    if missing:
        raise ModelLoadError(f"artifact {artifact_id}: files missing from the archive: {missing}")
