"""The one walker and hasher of artifact directories.

The engine lists and hashes its output with it (the manifest's `sha256`), the worker archives
exactly the files it lists, and the server checks an extracted archive with it, so the three
agree on what "the artifact's files" are: every regular file under the top directory, as a
forward-slash path relative to it, sorted as strings (the archive's entry order, which keeps
its sha256 reproducible).

Links and special files are refused rather than skipped: an artifact is plain files, and a
link would be archived, or served, as content that no recorded hash vouches for.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


class ArtifactLayoutError(ValueError):
    """The directory holds something other than directories and regular files."""


@dataclass(frozen=True)
class ArtifactFile:
    path: str  # relative to the artifact's top directory, with forward slashes
    size_bytes: int
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _raise(error: OSError) -> None:
    # os.walk skips unreadable directories by default: a file silently left out of the list
    # would be left out of the hashes and the archive too.
    raise error


def walk_files(root: Path) -> list[str]:
    """Every regular file under `root`, as sorted relative POSIX paths; links and special
    files raise ArtifactLayoutError (a linked directory is refused, never entered)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise):
        base = Path(dirpath)
        for name in dirnames + filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise ArtifactLayoutError(f"{rel} is a link; an artifact holds plain files only")
            if name in filenames:
                if not path.is_file():
                    raise ArtifactLayoutError(
                        f"{rel} is not a regular file; an artifact holds plain files only"
                    )
                found.append(rel)
    return sorted(found)


def describe_files(root: Path, *, exclude: frozenset[str] = frozenset()) -> list[ArtifactFile]:
    """Path, size and sha256 of every file `walk_files` lists, bar the `exclude`d paths."""
    return [
        ArtifactFile(rel, (root / rel).stat().st_size, sha256_file(root / rel))
        for rel in walk_files(root)
        if rel not in exclude
    ]
