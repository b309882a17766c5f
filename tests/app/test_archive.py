"""The archive extractor on its own: traversal, links and bombs never write outside `dest`."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from app.models.archive import (
    ArchiveError,
    ArchiveTooLarge,
    Limits,
    extract_archive,
    safe_relative_path,
)
from tests.app.model_archives import tar_gz_bytes, zip_bytes

pytestmark = pytest.mark.unit

LIMITS = Limits(max_entries=100, max_total_bytes=10_000_000, max_ratio=100.0)


@pytest.mark.parametrize("name", ["../a", "a/../../b", "/abs", "C:/win", "a\\..\\b", "a\x00b"])
def test_unsafe_names(name: str) -> None:
    with pytest.raises(ArchiveError):
        safe_relative_path(name)


def test_plain_names() -> None:
    assert str(safe_relative_path("./a/b.txt")) == "a/b.txt"
    assert safe_relative_path("dir/") is not None
    assert safe_relative_path("./") is None


def test_lying_tar_header_is_capped(tmp_path: Path) -> None:
    """A tar whose entries declare small sizes but a ratio bomb overall stops at the cap."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for i in range(5):
            data = b"\0" * 2_000_000
            info = tarfile.TarInfo(f"f{i}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(buf.getvalue())
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveTooLarge, match="ratio"):
        extract_archive(archive, dest, LIMITS)


def test_many_entries_stop_early(tmp_path: Path) -> None:
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(tar_gz_bytes({f"f{i}": b"x" for i in range(500)}))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveTooLarge, match="entries"):
        extract_archive(archive, dest, LIMITS)


def test_good_zip(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    archive.write_bytes(zip_bytes({"a/b.txt": b"hello", "c.txt": b"world"}))
    dest = tmp_path / "out"
    dest.mkdir()
    files = extract_archive(archive, dest, LIMITS)
    assert sorted(str(f) for f in files) == ["a/b.txt", "c.txt"]
    assert (dest / "a/b.txt").read_bytes() == b"hello"


def test_duplicate_entries_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "dup.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for payload in (b"one", b"two"):
            info = tarfile.TarInfo("same.txt")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    archive.write_bytes(buf.getvalue())
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="twice"):
        extract_archive(archive, dest, LIMITS)
