"""Point 5: hostile archives are refused within caps, and nothing lands outside the job folder.

Every case is extracted by the real extractor (`app.models.archive`) into `<sandbox>/dest`;
afterwards the sandbox holds nothing outside `dest`, no file named by the attack exists
anywhere, and what was written before the refusal stays within the byte cap.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.models.archive import ArchiveError, Limits, extract_archive
from tests.app.conftest import TenantKey
from tests.app.model_archives import model_files, zip_bytes
from tests.reliability.harness import figure

pytestmark = pytest.mark.unit

LIMITS = Limits(max_entries=1000, max_total_bytes=8 * 1024 * 1024, max_ratio=50.0)
TAG = uuid.uuid4().hex[:8]  # names the attack files, so a leak anywhere is findable
EVIL = f"evil-{TAG}.txt"


def _zip(entries: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo("link")
            info.external_attr = 0o120777 << 16
            zf.writestr(info, symlink)
    return buf.getvalue()


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _zip_bomb() -> bytes:
    return _zip([("config.json", b"{}"), ("zeros.bin", b"\0" * (64 * 1024 * 1024))])


def _tar_bomb() -> bytes:
    return _tar([("zeros.bin", b"\0" * (64 * 1024 * 1024))])


def _many_zip(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"f{i}", b"")
    return buf.getvalue()


def _many_tar(n: int) -> bytes:
    return _tar([(f"f{i}", b"") for i in range(n)])


def _lying_zip() -> bytes:
    """A deflated entry whose header claims 10 bytes but which inflates to 32 MiB."""
    data = bytearray(_zip([("big.bin", b"\0" * (32 * 1024 * 1024))]))
    # Patch the declared uncompressed size in the central directory (offset 24 of the entry).
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    return bytes(data)


CASES: dict[str, Callable[[], bytes]] = {
    "zip_slip_dotdot": lambda: _zip([(f"../../{EVIL}", b"x")]),
    "zip_slip_nested": lambda: _zip([(f"a/b/../../../{EVIL}", b"x")]),
    "zip_absolute": lambda: _zip([(f"/tmp/{EVIL}", b"x")]),
    "zip_backslash": lambda: _zip([(f"..\\..\\{EVIL}", b"x")]),
    "zip_drive_letter": lambda: _zip([(f"C:/{EVIL}", b"x")]),
    "zip_symlink": lambda: _zip([("a.txt", b"x")], symlink="/etc/passwd"),
    "tar_slip_dotdot": lambda: _tar([(f"../{EVIL}", b"x")]),
    "tar_absolute": lambda: _tar([(f"/tmp/{EVIL}", b"x")]),
    "tar_symlink_out": lambda: _tar([_link("link", "/etc/passwd", tarfile.SYMTYPE)]),
    "tar_symlink_then_write_through": lambda: _tar(
        [_link("d", "/tmp", tarfile.SYMTYPE), (f"d/{EVIL}", b"x")]
    ),
    "tar_hardlink_out": lambda: _tar([_link("h", "/etc/passwd", tarfile.LNKTYPE)]),
    "tar_hardlink_in": lambda: _tar([("a", b"x"), _link("b", "a", tarfile.LNKTYPE)]),
    "tar_device": lambda: _tar([_link("dev", "", tarfile.CHRTYPE)]),
    "tar_fifo": lambda: _tar([_link("fifo", "", tarfile.FIFOTYPE)]),
    "zip_bomb_ratio": _zip_bomb,
    "tar_gz_bomb_ratio": _tar_bomb,
    "zip_lying_header": _lying_zip,
    "zip_100k_entries": lambda: _many_zip(100_000),
    "tar_100k_entries": lambda: _many_tar(100_000),
    "zip_duplicate_names": lambda: _zip([("a", b"1"), ("a", b"2")]),
    "not_an_archive": lambda: b"MZ\x90\x00 not an archive at all",
}


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_hostile_archives_are_refused_within_caps(tmp_path: Path) -> None:
    refused, outside, max_written, slowest = 0, 0, 0, ("", 0.0)
    for name, build in CASES.items():
        sandbox = tmp_path / name
        dest = sandbox / "dest"
        dest.mkdir(parents=True)
        archive = sandbox / "upload.bin"
        archive.write_bytes(build())
        t0 = time.monotonic()
        with pytest.raises(ArchiveError):
            extract_archive(archive, dest, LIMITS)
        took = time.monotonic() - t0
        slowest = max(slowest, (name, took), key=lambda x: x[1])
        refused += 1
        written = sum(p.stat().st_size for p in _files(dest) if p.is_file())
        max_written = max(max_written, written)
        stray = [p for p in _files(sandbox) if p != archive and not p.is_relative_to(dest)]
        links = [p for p in _files(dest) if p.is_symlink()]
        outside += len(stray) + len(links)
        assert not stray, (name, stray)
        assert not links, (name, links)
        assert written <= LIMITS.max_total_bytes + 1024 * 1024, (name, written)
    leaked = list(Path("/tmp").glob(f"*{TAG}*")) + list(tmp_path.rglob(f"*{TAG}*"))
    figure(
        "hostile_archives",
        inputs_tried=len(CASES),
        refused=refused,
        written_outside=outside + len(leaked),
        max_bytes_written_before_refusal=max_written,
        byte_cap=LIMITS.max_total_bytes,
        slowest_case=f"{slowest[0]}:{slowest[1]:.2f}s",
    )
    assert not leaked


def test_hostile_archive_through_the_api_leaves_nothing(
    client: TestClient, tenant_a: TenantKey, tmp_path: Path
) -> None:
    for name in ("zip_slip_dotdot", "tar_symlink_then_write_through", "zip_bomb_ratio"):
        r = client.post(
            "/v1/models",
            headers=tenant_a.headers,
            files={"file": ("m.bin", CASES[name](), "application/octet-stream")},
        )
        assert r.status_code in (413, 422), (name, r.text)
        assert r.json()["error"]["message"], name
    ok = client.post(
        "/v1/models",
        headers=tenant_a.headers,
        files={"file": ("m.zip", zip_bytes(model_files()), "application/zip")},
    )
    assert ok.status_code == 201, ok.text  # the same route still takes a good archive
    assert not list(Path("/tmp").glob(f"*{TAG}*"))
