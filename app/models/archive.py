"""Safe extraction of uploaded .zip / .tar(.gz) archives.

An archive is hostile until proven otherwise. Refused: entries with absolute paths, drive
letters, `..` or backslashes (zip-slip), symlinks and hardlinks, device files and FIFOs,
encrypted entries, duplicate names, more than `max_entries` entries, more than
`max_total_bytes` uncompressed, and an uncompressed/compressed ratio above `max_ratio`
(a zip bomb). Sizes are enforced on the bytes actually written, not only on the headers, so
a lying header cannot get past the caps. Nothing is written outside `dest`; the caller
extracts into a fresh temporary folder and deletes it on any error.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(ValueError):
    """The archive is unsafe or malformed; the message says which entry and why."""


class ArchiveTooLarge(ArchiveError):
    """The archive exceeds a cap (entries, total size, compression ratio)."""


@dataclass(frozen=True)
class Limits:
    max_entries: int
    max_total_bytes: int
    max_ratio: float


def safe_relative_path(name: str) -> PurePosixPath | None:
    """The entry's path inside the destination, or None for a bare directory marker."""
    if "\x00" in name or "\\" in name:
        raise ArchiveError(f"entry {name!r}: backslashes and NUL bytes are not allowed in paths")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveError(f"entry {name!r}: absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"entry {name!r}: '..' in a path is not allowed (path traversal)")
    return PurePosixPath(*parts) if parts else None


class _Writer:
    """Writes entries under `dest`, enforcing the byte and ratio caps on real bytes."""

    def __init__(self, dest: Path, archive_bytes: int, limits: Limits) -> None:
        self.dest = dest.resolve()
        self.limits = limits
        self.budget = min(limits.max_total_bytes, int(max(archive_bytes, 1) * limits.max_ratio))
        self.written = 0
        self.files: list[PurePosixPath] = []
        self._seen: set[PurePosixPath] = set()

    def check_declared(self, total: int) -> None:
        self._check_total(total)

    def _check_total(self, total: int) -> None:
        if total > self.limits.max_total_bytes:
            raise ArchiveTooLarge(
                f"the archive expands to more than {self.limits.max_total_bytes} bytes"
            )
        if total > self.budget:
            raise ArchiveTooLarge(
                f"the archive's compression ratio is above {self.limits.max_ratio:g}"
                " (possible zip bomb)"
            )

    def write(self, rel: PurePosixPath, src: IO[bytes]) -> None:
        if rel in self._seen:
            raise ArchiveError(f"entry {rel.as_posix()!r} appears twice")
        self._seen.add(rel)
        target = (self.dest / rel).resolve()
        if not target.is_relative_to(self.dest):  # belt and braces after safe_relative_path
            raise ArchiveError(f"entry {rel.as_posix()!r} would be written outside the folder")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("xb") as out:
                while chunk := src.read(CHUNK):
                    self.written += len(chunk)
                    self._check_total(self.written)
                    out.write(chunk)
        except OSError as exc:
            raise ArchiveError(f"entry {rel.as_posix()!r} cannot be extracted: {exc}") from exc
        self.files.append(rel)


def extract_archive(
    archive: Path,
    dest: Path,
    limits: Limits,
    check_name: Callable[[PurePosixPath], None] | None = None,
) -> list[PurePosixPath]:
    """Extract `archive` (zip or tar, optionally gz/bz2/xz) into the empty folder `dest`.

    `check_name` may refuse an entry by name before any of its bytes are written.
    Returns the relative paths of the extracted files.
    """
    writer = _Writer(dest, archive.stat().st_size, limits)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, writer, check_name)
    else:
        try:
            tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 - closed by the `with` below
        except tarfile.TarError as exc:
            raise ArchiveError("the file is not a .zip or .tar.gz archive") from exc
        with tar:
            _extract_tar(tar, writer, check_name)
    if not writer.files:
        raise ArchiveError("the archive contains no files")
    return writer.files


def _extract_zip(
    archive: Path, writer: _Writer, check_name: Callable[[PurePosixPath], None] | None
) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"the zip file is damaged: {exc}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > writer.limits.max_entries:
            raise ArchiveTooLarge(
                f"the archive has {len(infos)} entries; the limit is {writer.limits.max_entries}"
            )
        writer.check_declared(sum(i.file_size for i in infos))
        for info in infos:
            rel = safe_relative_path(info.filename)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise ArchiveError(f"entry {info.filename!r}: symbolic links are not allowed")
            if mode not in (0, 0o100000, 0o040000):
                raise ArchiveError(f"entry {info.filename!r}: only regular files are allowed")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"entry {info.filename!r}: encrypted entries are not allowed")
            if rel is None or info.is_dir():
                continue
            if check_name is not None:
                check_name(rel)
            try:
                with zf.open(info) as src:
                    writer.write(rel, src)
            except (zipfile.BadZipFile, EOFError) as exc:
                raise ArchiveError(f"entry {info.filename!r} is damaged: {exc}") from exc


def _extract_tar(
    tar: tarfile.TarFile, writer: _Writer, check_name: Callable[[PurePosixPath], None] | None
) -> None:
    count = 0
    declared = 0
    try:
        for member in tar:  # streams: a 100k-entry archive stops at the cap, not after reading all
            count += 1
            if count > writer.limits.max_entries:
                raise ArchiveTooLarge(
                    f"the archive has more than {writer.limits.max_entries} entries"
                )
            if member.issym() or member.islnk():
                raise ArchiveError(f"entry {member.name!r}: links are not allowed")
            if not (member.isreg() or member.isdir()):
                raise ArchiveError(f"entry {member.name!r}: only regular files are allowed")
            rel = safe_relative_path(member.name)
            if rel is None or member.isdir():
                continue
            declared += member.size
            writer.check_declared(declared)
            if check_name is not None:
                check_name(rel)
            src = tar.extractfile(member)
            if src is None:  # pragma: no cover - regular members always have a file object
                raise ArchiveError(f"entry {member.name!r} cannot be read")
            with src:
                writer.write(rel, src)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveError(f"the tar archive is damaged: {exc}") from exc


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
