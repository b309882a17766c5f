"""What crosses machines for one attempt: its inputs in, its teacher checkpoint in and out.

A worker shares no folder with the API or with other workers; everything comes through the
blob store (`app/storage.py`):

- `stage_inputs` downloads the job's datasets and uploaded model into the attempt's folder,
  each checked against the sha256 recorded at upload (a mismatch is `input_corrupt`, a
  missing blob `input_missing`: the job fails with that code, nothing unverified is used),
  and unpacks the model archive with the same caps and checks as the upload did.
- `fetch_checkpoint` puts the job's teacher checkpoint from the store in place before the
  engine starts, unless this machine still has its own (a retry on the same worker), so a
  retry on another machine resumes instead of training the teacher again.
- `CheckpointUpload` wraps the engine's callbacks: on `checkpoint.saved` it uploads the
  checkpoint folder as one tar (one object: a reader sees all of it or none) before the event
  is recorded, so an event a user sees means a checkpoint any machine can resume from.

`StoreUnavailable` is left to the caller (`job_runner`): the job is queued again, not failed.
The engine checks a restored checkpoint's own checksums and fingerprint and ignores one that
does not match, so a checkpoint blob needs no sha256 of its own on a row.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from app.jobs.inputs import InputRef, StoredInputs
from app.models.archive import ArchiveError, Limits, extract_archive
from app.models.inspect import ModelCheckError
from app.models.service import archive_limits, unpack_model
from app.settings import Settings
from app.storage import BlobNotFound, BlobStore, ChecksumMismatch
from sec_engine.callbacks import EngineCallbacks, Phase, TraceRow
from sec_engine.errors import EngineError
from sec_engine.result import ResolvedInputs

logger = logging.getLogger(__name__)

# What the engine writes under its checkpoint folder: `sec_engine.checkpoint.PHASE_DIR`, not
# imported because that module loads torch and this one is imported by the worker's parent
# process (a test checks the two agree).
CHECKPOINT_PHASE_DIR = "teacher"
SAVED_EVENT = "checkpoint.saved"


class InputCorrupt(EngineError):
    """An input's bytes in the store are not the ones recorded at upload."""

    code = "input_corrupt"


class InputMissing(EngineError):
    """An input's blob is gone from the store (deleted, or a wrong bucket configured)."""

    code = "input_missing"


class InputUnusable(EngineError):
    """An uploaded model that no longer unpacks or passes the upload's checks."""

    code = "invalid_model"


def stage_inputs(
    store: BlobStore, inputs: StoredInputs, dest: Path, settings: Settings
) -> ResolvedInputs:
    """The job's inputs as local files under `dest` (created), as the engine opens them."""
    dest.mkdir(parents=True, exist_ok=True)
    model = inputs.model
    return ResolvedInputs(
        model=model if isinstance(model, str) else _stage_model(store, model, dest, settings),
        train_path=_stage_file(store, inputs.train, dest, "train"),
        validation_path=_optional(store, inputs.validation, dest, "validation"),
        unlabelled_path=_optional(store, inputs.unlabelled, dest, "unlabelled"),
    )


def _optional(store: BlobStore, ref: InputRef | None, dest: Path, name: str) -> Path | None:
    return None if ref is None else _stage_file(store, ref, dest, name)


def _stage_file(store: BlobStore, ref: InputRef, dest: Path, name: str) -> Path:
    if ref.key is None:
        return Path(ref.path or "")  # an upload from before the blob store: the API's disk
    # The engine tells CSV from JSONL by the extension, which the key keeps.
    local = dest / f"{name}{PurePosixPath(ref.key).suffix}"
    _download(store, ref, local, name)
    return local


def _download(store: BlobStore, ref: InputRef, local: Path, name: str) -> None:
    assert ref.key is not None
    try:
        store.get_file(ref.key, local, sha256=ref.sha256)
    except ChecksumMismatch as exc:
        raise InputCorrupt(
            f"the {name} input in the store does not match the sha256 recorded at upload;"
            " upload it again"
        ) from exc
    except BlobNotFound as exc:
        raise InputMissing(
            f"the {name} input is missing from the store ({ref.key}); upload it again"
        ) from exc


def _stage_model(store: BlobStore, ref: InputRef, dest: Path, settings: Settings) -> str:
    if ref.key is None:
        return ref.path or ""
    archive = dest / "model.archive"
    _download(store, ref, archive, "base model")
    folder = dest / "model"
    folder.mkdir()
    try:
        unpacked = unpack_model(archive, folder, archive_limits(settings))
    except (ArchiveError, ModelCheckError) as exc:
        raise InputUnusable(f"the uploaded base model cannot be used: {exc}") from exc
    finally:
        archive.unlink(missing_ok=True)
    return str(unpacked.root)


# --- the teacher checkpoint -------------------------------------------------------------------


def fetch_checkpoint(store: BlobStore, key: str, checkpoint_dir: Path, settings: Settings) -> bool:
    """Put the stored checkpoint in `checkpoint_dir` unless this machine has one; whether
    one was fetched. A blob that does not unpack is logged and left: the teacher trains."""
    if (checkpoint_dir / CHECKPOINT_PHASE_DIR).is_dir():
        return False  # this machine ran an earlier attempt; the engine checks what it finds
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=checkpoint_dir, prefix=".fetch."))
    try:
        tar = work / "checkpoint.tar"
        try:
            store.get_file(key, tar)
        except BlobNotFound:
            return False
        unpacked = work / "unpacked"
        unpacked.mkdir()
        try:
            extract_archive(tar, unpacked, _checkpoint_limits(settings))
        except ArchiveError as exc:
            logger.warning("checkpoint %s does not unpack (%s); the teacher trains", key, exc)
            return False
        phase = unpacked / CHECKPOINT_PHASE_DIR
        if not phase.is_dir():
            logger.warning("checkpoint %s holds no %s/ folder", key, CHECKPOINT_PHASE_DIR)
            return False
        phase.rename(checkpoint_dir / CHECKPOINT_PHASE_DIR)
        return True
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _checkpoint_limits(settings: Settings) -> Limits:
    # A teacher's weights plus its soft sets: a few times the largest model we accept.
    model = archive_limits(settings)
    return Limits(max_entries=16, max_total_bytes=4 * model.max_total_bytes, max_ratio=1000.0)


def upload_checkpoint(store: BlobStore, key: str, checkpoint_dir: Path) -> int:
    """Upload the checkpoint folder as one tar; its size in bytes."""
    with tempfile.TemporaryDirectory(dir=checkpoint_dir, prefix=".upload.") as tmp:
        tar_path = Path(tmp) / "checkpoint.tar"
        # Uncompressed: safetensors weights do not shrink, and gzip would cost CPU seconds.
        with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(checkpoint_dir / CHECKPOINT_PHASE_DIR, arcname=CHECKPOINT_PHASE_DIR)
        store.put_file(key, tar_path)
        return tar_path.stat().st_size


class CheckpointUpload:
    """The attempt's callbacks, with the checkpoint uploaded when the engine reports it saved.
    The upload runs before the event is recorded; if the store is down it is logged and
    reported (`checkpoint.upload_failed`), and the job goes on: only a retry on another
    machine loses the checkpoint."""

    def __init__(
        self, inner: EngineCallbacks, store: BlobStore, key: str, checkpoint_dir: Path
    ) -> None:
        self._inner = inner
        self._store = store
        self._key = key
        self._checkpoint_dir = checkpoint_dir

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        if kind == SAVED_EVENT:
            try:
                size = upload_checkpoint(self._store, self._key, self._checkpoint_dir)
            except Exception as exc:  # the job must not fail for a checkpoint it can re-make
                logger.warning("checkpoint upload to %s failed: %s", self._key, exc)
                self._inner.event(
                    "checkpoint.upload_failed",
                    "the teacher checkpoint could not be stored; a retry on another machine"
                    " will train the teacher again",
                    {"error": type(exc).__name__},
                )
            else:
                data = {**(data or {}), "stored_bytes": size}
        self._inner.event(kind, message, data)

    def trace(self, row: TraceRow) -> None:
        self._inner.trace(row)

    def progress(self, phase: Phase, fraction: float) -> None:
        self._inner.progress(phase, fraction)

    def should_cancel(self) -> bool:
        return self._inner.should_cancel()
