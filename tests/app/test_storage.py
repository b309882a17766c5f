"""The local artifact store: atomic writes, reads, and keys that cannot escape the root."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.storage import InvalidKey, LocalArtifactStore, S3ArtifactStore, store_from_url

pytestmark = pytest.mark.unit


def test_put_read_delete(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    src = tmp_path / "a.tar.gz"
    src.write_bytes(b"x" * 3_000_000)
    store.put_file("t1/job/a.tar.gz", src)
    assert store.exists("t1/job/a.tar.gz")
    assert b"".join(store.iter_bytes("t1/job/a.tar.gz")) == src.read_bytes()
    path = store.path_for("t1/job/a.tar.gz")
    assert path is not None
    assert path.read_bytes() == src.read_bytes()
    # Only the final file is in the folder: the temp file was renamed, not left behind.
    assert [p.name for p in (tmp_path / "store/t1/job").iterdir()] == ["a.tar.gz"]
    store.put_file("t1/job/a.tar.gz", src)  # overwrite is allowed, atomically
    store.delete("t1/job/a.tar.gz")
    assert not store.exists("t1/job/a.tar.gz")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        store.put_file("k/a.bin", tmp_path / "missing")
    assert list((tmp_path / "store/k").iterdir()) == []


def test_sweep_removes_only_stale_partial_writes(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    src = tmp_path / "a.tar.gz"
    src.write_bytes(b"archive")
    store.put_file("t1/job/a.tar.gz", src)
    folder = tmp_path / "store/t1/job"
    stale = folder / ".a.tar.gz.dead1.tmp"  # a writer killed mid-copy two hours ago
    live = folder / ".a.tar.gz.live2.tmp"  # a copy in progress right now
    for leftover in (stale, live):
        leftover.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    assert store.sweep_partial_writes(older_than_seconds=3600) == 1
    assert sorted(p.name for p in folder.iterdir()) == [live.name, "a.tar.gz"]
    assert (folder / "a.tar.gz").read_bytes() == b"archive"
    assert store.sweep_partial_writes(older_than_seconds=3600) == 0
    assert LocalArtifactStore(tmp_path / "absent").sweep_partial_writes(3600) == 0


@pytest.mark.parametrize(
    "key", ["", "../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", "./a", "a/\x00"]
)
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(InvalidKey):
        store.path_for(key)


def test_store_from_url(tmp_path: Path) -> None:
    assert isinstance(store_from_url(f"file://{tmp_path}"), LocalArtifactStore)
    assert isinstance(store_from_url(str(tmp_path)), LocalArtifactStore)
    with pytest.raises(ValueError, match="unsupported"):
        store_from_url("ftp://host/x")
    try:
        import boto3  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="boto3"):
            store_from_url("s3://bucket/prefix")
    else:
        store = store_from_url("s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:1")
        assert isinstance(store, S3ArtifactStore)
        assert store.prefix == "prefix"
