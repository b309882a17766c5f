"""Packing an engine output directory into one reproducible .tar.gz, with its checksums.

The archive holds exactly the files the artifact contract's walker lists (the ones the
manifest's checksums cover, plus manifest.json), in its order; links and special files are
refused there. It is deterministic (sorted entries, fixed mtimes, owners and modes, no gzip
timestamp), so the same output always gives the same sha256 and a user can verify a download
against the record.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

from sec_engine.artifact_contract.files import sha256_file, walk_files


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
        for rel in walk_files(src):
            path = src / rel
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = path.stat().st_size
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(dest)
    return sha256_file(dest)
