"""Verification before loading: archive sha256 vs the record, file sha256s vs the manifest,
safe extraction; a cached extraction is re-checked before every load."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from app.serving.artifact import ArtifactRef, prepare_artifact
from app.serving.errors import ModelLoadError
from app.storage import LocalBlobStore
from tests.serving.conftest import stored_ref
from tests.serving.tiny_artifact import TinyArtifact

pytestmark = pytest.mark.unit


def _prepare(ref: ArtifactRef, store: LocalBlobStore, root: Path) -> Path:
    return prepare_artifact(ref, store, root, max_entries=100, max_ratio=200.0)


def test_a_good_archive_is_extracted_verified_and_cached(
    tiny: TinyArtifact, store: LocalBlobStore, tmp_path: Path
) -> None:
    ref = stored_ref(store, tiny)
    root = tmp_path / "serving"
    directory = _prepare(ref, store, root)
    assert directory == root / "artifacts" / tiny.sha256
    assert (directory / "model.int8.onnx").read_bytes() == (
        tiny.directory / "model.int8.onnx"
    ).read_bytes()
    assert not any((root / "tmp").iterdir())  # no leftovers
    # The second load reuses the extraction (the archive may even be gone by then)...
    (store.root / ref.storage_key).unlink()
    assert _prepare(ref, store, root) == directory
    # ...but still checks every file against the record before loading.
    (directory / "model.int8.onnx").write_bytes(b"swapped")
    with pytest.raises(ModelLoadError, match=r"sha256 mismatch for model\.int8\.onnx"):
        _prepare(ref, store, root)


def test_archive_sha_mismatch_is_refused_before_extraction(
    tiny: TinyArtifact, store: LocalBlobStore, tmp_path: Path
) -> None:
    data = bytearray(tiny.archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ref = stored_ref(store, tiny, bytes(data))
    root = tmp_path / "serving"
    with pytest.raises(ModelLoadError, match="archive sha256 mismatch"):
        _prepare(ref, store, root)
    assert not (root / "artifacts").exists()
    assert not any((root / "tmp").iterdir())


def _tar(entries: dict[str, bytes], *, link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("entries", "link", "message"),
    [
        ({"top/../../evil": b"x"}, None, "path traversal"),
        ({"/abs/manifest.json": b"{}"}, None, "absolute paths"),
        ({"top/manifest.json": b"{}"}, "top/model.int8.onnx", "links are not allowed"),
    ],
)
def test_unsafe_archives_are_refused(
    tiny: TinyArtifact,
    store: LocalBlobStore,
    tmp_path: Path,
    entries: dict[str, bytes],
    link: str | None,
    message: str,
) -> None:
    data = _tar(entries, link=link)
    ref = stored_ref(store, tiny, data)
    # Pretend the record vouches for these bytes: the extractor must still refuse them.
    import hashlib

    ref = ArtifactRef(
        ref.artifact_id, ref.storage_key, hashlib.sha256(data).hexdigest(), ref.manifest
    )
    with pytest.raises(ModelLoadError, match=message):
        _prepare(ref, store, tmp_path / "serving")
    assert not (tmp_path / "evil").exists()


def test_unlisted_or_missing_files_are_refused(
    tiny: TinyArtifact, store: LocalBlobStore, tmp_path: Path
) -> None:
    import hashlib

    files = {f"top/{p}": (tiny.directory / p).read_bytes() for p in tiny.manifest["sha256"]}
    files["top/manifest.json"] = (tiny.directory / "manifest.json").read_bytes()
    for extra, drop, message in (
        ("top/model/extra.bin", None, "not listed in the manifest"),
        (None, "top/model/tokenizer.json", "files missing"),
    ):
        entries = dict(files)
        if extra:
            entries[extra] = b"payload"
        if drop:
            del entries[drop]
        data = _tar(entries)
        ref = stored_ref(store, tiny, data)
        ref = ArtifactRef(
            ref.artifact_id, ref.storage_key, hashlib.sha256(data).hexdigest(), ref.manifest
        )
        with pytest.raises(ModelLoadError, match=message):
            _prepare(ref, store, tmp_path / "serving")


def test_a_record_without_checksums_is_refused(
    tiny: TinyArtifact, store: LocalBlobStore, tmp_path: Path
) -> None:
    ref = stored_ref(store, tiny)
    bare = ArtifactRef(ref.artifact_id, ref.storage_key, "", ref.manifest)
    with pytest.raises(ModelLoadError, match="no recorded sha256"):
        _prepare(bare, store, tmp_path / "serving")
