"""Serving-engine fixtures: the tiny real artifact and a local store holding it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.serving.artifact import ArtifactRef
from app.storage import LocalBlobStore
from tests.serving.tiny_artifact import TinyArtifact, tiny_artifact


@pytest.fixture(scope="session")
def tiny() -> TinyArtifact:
    return tiny_artifact()


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store")


def stored_ref(store: LocalBlobStore, tiny: TinyArtifact, data: bytes | None = None) -> ArtifactRef:
    """Put the archive (or other bytes) in the store; the ref records the true checksums."""
    key = "ten/job/art.tar.gz"
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny.archive.read_bytes() if data is None else data)
    return ArtifactRef.from_record(
        artifact_id="art_test", storage_key=key, sha256=tiny.sha256, manifest=tiny.manifest
    )
