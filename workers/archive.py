"""Packing an engine output directory into one reproducible .tar.gz, with its checksums.

The archive is deterministic (sorted entries, fixed mtimes, owners and modes, no gzip
timestamp), so the same output always gives the same sha256 and a user can verify a download
against the record. Links and special files are refused: the artifact must be plain files.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from sec_engine.export.manifest import sha256_file
from sec_engine.result import ArtifactFile


def list_files(root: Path) -> list[Path]:
    """Every regular file under `root`, sorted by relative POSIX path. Refuses links."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise ValueError(f"refusing to archive a link: {p.relative_to(root)}")
        for name in filenames:
            p = Path(dirpath) / name
            if not p.is_file():
                raise ValueError(f"refusing to archive a special file: {p.relative_to(root)}")
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def describe_files(root: Path) -> list[ArtifactFile]:
    return [
        ArtifactFile(
            path=p.relative_to(root).as_posix(), size_bytes=p.stat().st_size, sha256=sha256_file(p)
        )
        for p in list_files(root)
    ]


def make_archive(src: Path, dest: Path, top: str) -> str:
    """Write `src` as `dest` (.tar.gz) with every entry under `top/`; return the sha256.

    Written to a temporary name and renamed, so `dest` is either complete or absent.
    """
    tmp = dest.with_name(dest.name + ".part")
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in list_files(src):
            info = tarfile.TarInfo(f"{top}/{path.relative_to(src).as_posix()}")
            info.size = path.stat().st_size
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(dest)
    return sha256_file(dest)
