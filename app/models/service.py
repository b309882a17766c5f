"""Uploading HF-format model archives (a job's `base_model` is resolved in `app/jobs/inputs.py`).

The upload is streamed to a temp file (size cap), unpacked into a temp folder with the
safety caps of `archive.py` and checked (`inspect.py`): that is `unpack_model`, which the
worker runs again on the copy it downloads. The archive as uploaded, once it passed, goes
into the blob store under `model_key` (a multipart upload for a big one), with its sha256 on
the row; the temp folder goes whatever happens, and a rolled-back transaction deletes the
blob.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sqlalchemy.orm import Session

from app.db.hooks import on_rollback
from app.db.models import Model, new_id
from app.errors import InvalidInput, PayloadTooLarge
from app.models.archive import ArchiveError, ArchiveTooLarge, Limits, extract_archive
from app.models.inspect import ModelCheckError, ModelInfo, check_entry_name, inspect_model_dir
from app.settings import Settings
from app.storage import BlobStore, delete_quietly, model_key
from sec_engine.models.builtin import BuiltinModel

CHUNK = 1024 * 1024


def builtin_available(model: BuiltinModel) -> bool:
    """Whether the package shipping the weights is installed (found without importing it)."""
    return importlib.util.find_spec(model.package.replace("-", "_")) is not None


@dataclass(frozen=True)
class UnpackedModel:
    root: Path  # the folder holding config.json
    files: list[PurePosixPath]
    info: ModelInfo


def archive_limits(settings: Settings) -> Limits:
    return Limits(
        max_entries=settings.max_archive_entries,
        max_total_bytes=settings.max_model_archive_bytes,
        max_ratio=settings.max_archive_ratio,
    )


def unpack_model(archive: Path, dest: Path, limits: Limits) -> UnpackedModel:
    """Extract a model archive into the empty folder `dest` and check what it holds.
    Raises `ArchiveError` (unsafe or too large) or `ModelCheckError` (not a usable model)."""
    files = extract_archive(archive, dest, limits, check_name=check_entry_name)
    root = _model_root(dest)
    return UnpackedModel(root=root, files=files, info=inspect_model_dir(root))


def create_model(
    session: Session,
    settings: Settings,
    store: BlobStore,
    tenant_id: str,
    *,
    upload: BinaryIO,
    filename: str,
    name: str | None,
) -> Model:
    scratch = settings.uploads_dir / tenant_id
    scratch.mkdir(parents=True, exist_ok=True)
    model_id = new_id("mdl")
    key = model_key(tenant_id, model_id)
    work = Path(tempfile.mkdtemp(dir=scratch, prefix=f".{model_id}."))
    try:
        archive = work / "upload.archive"
        archive_sha, archive_bytes = _receive(upload, archive, settings.max_model_archive_bytes)
        extracted = work / "extracted"
        extracted.mkdir()
        try:
            unpacked = unpack_model(archive, extracted, archive_limits(settings))
        except ArchiveTooLarge as exc:
            raise PayloadTooLarge(
                f"invalid model archive: {exc}", code="archive_too_large"
            ) from exc
        except (ArchiveError, ModelCheckError) as exc:
            raise InvalidInput(f"invalid model archive: {exc}", code="invalid_model") from exc
        size = sum(p.stat().st_size for p in unpacked.root.rglob("*") if p.is_file())
        store.put_file(key, archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    on_rollback(session, lambda: delete_quietly(store, key))

    info = unpacked.info
    model = Model(
        id=model_id,
        tenant_id=tenant_id,
        name=(name or _strip_archive_suffix(filename) or model_id)[:300],
        architecture=info.architecture[:200],
        storage_key=key,
        size_bytes=size,
        sha256=archive_sha,
        num_parameters=info.num_parameters,
        details={
            "model_type": info.model_type,
            "weight_files": info.weight_files,
            "files": sorted(p.as_posix() for p in unpacked.files)[:1000],
            "archive_bytes": archive_bytes,
            "num_labels": _num_labels(info.config),
        },
    )
    session.add(model)
    session.flush()
    return model


def _receive(upload: BinaryIO, dest: Path, limit: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    total = 0
    with dest.open("wb") as out:
        while chunk := upload.read(CHUNK):
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"the archive is larger than the limit of {limit} bytes")
            digest.update(chunk)
            out.write(chunk)
    if total == 0:
        raise InvalidInput("the uploaded archive is empty", code="invalid_model")
    return digest.hexdigest(), total


def _model_root(extracted: Path) -> Path:
    """The folder holding config.json: the top level, or a single top-level folder (what
    `tar czf model.tar.gz my-model/` produces)."""
    if (extracted / "config.json").is_file():
        return extracted
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "config.json").is_file():
        return entries[0]
    raise ModelCheckError("the archive has no config.json at its top level")


def _strip_archive_suffix(filename: str) -> str:
    name = Path(filename).name
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _num_labels(config: dict[str, object]) -> int | None:
    id2label = config.get("id2label")
    if isinstance(id2label, dict):
        return len(id2label)
    value = config.get("num_labels")
    return value if isinstance(value, int) else None
