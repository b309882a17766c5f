"""The local artifact store: atomic writes, reads, and keys that cannot escape the root."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from app.storage import (
    BlobNotFound,
    ChecksumMismatch,
    InvalidKey,
    LocalBlobStore,
    S3BlobStore,
    StoreUnavailable,
    _s3_errors,
    store_from_url,
)

pytestmark = pytest.mark.unit


def test_put_read_delete(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
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
    store = LocalBlobStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        store.put_file("k/a.bin", tmp_path / "missing")
    assert list((tmp_path / "store/k").iterdir()) == []


def test_sweep_removes_only_stale_partial_writes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
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
    assert LocalBlobStore(tmp_path / "absent").sweep_partial_writes(3600) == 0


@pytest.mark.parametrize(
    "key", ["", "../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", "./a", "a/\x00"]
)
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(InvalidKey):
        store.path_for(key)


def test_store_from_url(tmp_path: Path) -> None:
    assert isinstance(store_from_url(f"file://{tmp_path}"), LocalBlobStore)
    assert isinstance(store_from_url(str(tmp_path)), LocalBlobStore)
    with pytest.raises(ValueError, match="unsupported"):
        store_from_url("ftp://host/x")
    try:
        import boto3  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="boto3"):
            store_from_url("s3://bucket/prefix")
    else:
        store = store_from_url("s3://bucket/prefix", s3_endpoint_url="http://127.0.0.1:1")
        assert isinstance(store, S3BlobStore)
        assert store.prefix == "prefix"


def test_get_file_verifies_the_checksum(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    src = tmp_path / "blob"
    src.write_bytes(b"payload" * 1000)
    store.put_file("datasets/t/ds.csv", src)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    store.get_file("datasets/t/ds.csv", tmp_path / "out/ds.csv", good)
    assert (tmp_path / "out/ds.csv").read_bytes() == src.read_bytes()
    with pytest.raises(ChecksumMismatch, match="differs"):
        store.get_file("datasets/t/ds.csv", tmp_path / "bad/ds.csv", "0" * 64)
    assert list((tmp_path / "bad").iterdir()) == []  # nothing left behind
    with pytest.raises(BlobNotFound):
        store.get_file("datasets/t/missing.csv", tmp_path / "x")


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def _upload_failed(cause: Exception) -> Exception:
    """What boto3's upload_file raises for a ClientError: S3UploadFailedError, the
    ClientError as its context."""
    from boto3.exceptions import S3UploadFailedError

    error = S3UploadFailedError("Failed to upload")
    error.__context__ = cause  # as `raise` inside boto3's `except ClientError` sets it
    return error


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (lambda: _client_error("NoSuchKey", 404), BlobNotFound),
        (lambda: _client_error("404", 404), BlobNotFound),  # HEAD: no body, bare status
        (lambda: _client_error("InternalError", 500), StoreUnavailable),
        (lambda: _client_error("SlowDown", 503), StoreUnavailable),
        (lambda: _upload_failed(_client_error("ServiceUnavailable", 503)), StoreUnavailable),
        (lambda: _endpoint_error(), StoreUnavailable),
        (lambda: _read_timeout(), StoreUnavailable),
    ],
)
def test_s3_errors_become_the_stores(raised: Any, expected: type[Exception]) -> None:
    with pytest.raises(expected), _s3_errors("k"):
        raise raised()


@pytest.mark.parametrize(
    "raised",
    [
        # Configuration errors: not "retry later", not "no such blob".
        lambda: _client_error("AccessDenied", 403),
        lambda: _client_error("NoSuchBucket", 404),
        lambda: _upload_failed(_client_error("AccessDenied", 403)),
    ],
)
def test_s3_configuration_errors_pass_through(raised: Any) -> None:
    error = raised()
    with pytest.raises(type(error)), _s3_errors("k"):
        raise error


def _endpoint_error() -> Exception:
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


def _read_timeout() -> Exception:
    from botocore.exceptions import ReadTimeoutError

    return ReadTimeoutError(endpoint_url="http://127.0.0.1:1")


def test_s3_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3BlobStore("b", "p/", endpoint_url="http://127.0.0.1:1", max_attempts=4)
    config = store._client.meta.config
    assert store.prefix == "p"
    assert config.s3 == {"addressing_style": "path"}  # what SeaweedFS and MinIO serve
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (config.connect_timeout, config.read_timeout) == (5.0, 60.0)
    assert store._transfer.multipart_threshold == 16 * 1024 * 1024
    # On AWS itself (no endpoint URL), boto3 chooses the addressing style.
    assert not S3BlobStore("b")._client.meta.config.s3
