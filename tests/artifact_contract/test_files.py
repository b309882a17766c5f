"""The one walker: plain files only, sorted as POSIX strings, used by the worker's archive."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from sec_engine.artifact_contract import (
    ArtifactLayoutError,
    describe_files,
    sha256_file,
    walk_files,
)
from workers.archive import make_archive

pytestmark = pytest.mark.unit


def _tree(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_text("{}")
    (root / "model.int8.onnx").write_bytes(b"onnx")
    (root / "manifest.json").write_text("{}")
    return root


def test_files_are_listed_as_sorted_posix_strings(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    # String order: "." sorts before "/", so the ONNX file comes before the folder's files.
    assert walk_files(root) == ["manifest.json", "model.int8.onnx", "model/config.json"]
    described = describe_files(root, exclude=frozenset({"manifest.json"}))
    assert [(f.path, f.size_bytes) for f in described] == [
        ("model.int8.onnx", 4),
        ("model/config.json", 2),
    ]
    assert described[0].sha256 == sha256_file(root / "model.int8.onnx")


def test_the_archive_holds_what_the_walker_lists(tmp_path: Path) -> None:
    root = _tree(tmp_path / "a")
    make_archive(root, tmp_path / "a.tar.gz", top="job")
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert tar.getnames() == [f"job/{rel}" for rel in walk_files(root)]


@pytest.mark.parametrize("kind", ["file link", "folder link", "fifo"])
def test_links_and_special_files_are_refused(tmp_path: Path, kind: str) -> None:
    root = _tree(tmp_path / "a")
    if kind == "file link":
        (root / "model" / "weights").symlink_to(root / "model.int8.onnx")
    elif kind == "folder link":
        (tmp_path / "elsewhere").mkdir()
        (root / "extra").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    else:
        os.mkfifo(root / "pipe")
    with pytest.raises(ArtifactLayoutError, match=r"link|not a regular file"):
        walk_files(root)
