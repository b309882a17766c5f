"""S3BlobStore against a real S3 server (SeaweedFS, scripts/s3_server.sh): round trips with
sha256 verification, multipart uploads, what a failed or abandoned upload leaves (nothing),
a wrong checksum on download, and an unreachable server."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.storage import (
    BlobNotFound,
    ChecksumMismatch,
    InvalidKey,
    S3BlobStore,
    StoreUnavailable,
    dataset_key,
    model_key,
)
from tests.conftest import S3Bucket
from tests.integration.flow import REPO_ROOT

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
# S3's smallest part (but the last); the tests' multipart objects use it to stay small.
MIN_PART = 5 * MiB


def _write_random(path: Path, size: int) -> str:
    """Fill `path` with `size` random bytes; their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for offset in range(0, size, MiB):
            chunk = os.urandom(min(MiB, size - offset))
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_put_get_round_trip_with_sha256(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_bucket.store()
    src = tmp_path / "ds.csv"
    sha = _write_random(src, 300_000)
    key = dataset_key("t1", "ds1", "csv")

    assert not store.exists(key)
    store.put_file(key, src)
    assert store.exists(key)
    # The store's prefix is the first path segment of the object key.
    assert s3_bucket.object_keys() == [f"sec/{key}"]

    store.get_file(key, tmp_path / "out/ds.csv", sha)
    assert (tmp_path / "out/ds.csv").read_bytes() == src.read_bytes()
    assert b"".join(store.iter_bytes(key, chunk_size=64 * 1024)) == src.read_bytes()
    with store.open(key) as body:
        assert body.read() == src.read_bytes()
    assert store.path_for(key) is None

    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting what is gone is no error
    with pytest.raises(BlobNotFound):
        store.get_file(key, tmp_path / "gone/ds.csv")
    assert list((tmp_path / "gone").iterdir()) == []
    with pytest.raises(BlobNotFound):
        list(store.iter_bytes(key))


def test_multipart_round_trip(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_bucket.store(multipart_threshold=MIN_PART, multipart_chunksize=MIN_PART)
    src = tmp_path / "model.archive"
    sha = _write_random(src, 40 * MiB + 123)
    key = model_key("t1", "m1")

    store.put_file(key, src)

    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=f"sec/{key}")
    assert head["ContentLength"] == src.stat().st_size
    # A multipart object's ETag is "<md5 of the parts' md5s>-<part count>": 9 parts here.
    assert head["ETag"].strip('"').endswith("-9")
    store.get_file(key, tmp_path / "out/model.archive", sha)
    assert _sha256(tmp_path / "out/model.archive") == sha
    assert s3_bucket.multipart_uploads() == []


def test_failed_multipart_upload_leaves_no_object_and_no_upload(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """The connection drops for every part after the first (after the client's retries):
    put_file raises StoreUnavailable, the upload is aborted, nothing is stored."""
    from botocore.exceptions import EndpointConnectionError

    store = s3_bucket.store(
        multipart_threshold=MIN_PART, multipart_chunksize=MIN_PART, max_attempts=2
    )
    src = tmp_path / "model.archive"
    _write_random(src, 4 * MIN_PART)
    lock = threading.Lock()
    calls: dict[str, int] = {}

    def count(event_name: str, **_: Any) -> None:
        with lock:
            calls[event_name] = calls.get(event_name, 0) + 1

    def drop_after_first_part(request: Any, **_: Any) -> None:
        with lock:
            calls["parts"] = calls.get("parts", 0) + 1
            if calls["parts"] == 1:
                return  # the first part goes through
        raise EndpointConnectionError(endpoint_url=request.url)

    events = store._client.meta.events
    events.register("before-send.s3.UploadPart", drop_after_first_part)
    events.register("after-call.s3.CreateMultipartUpload", count)
    events.register("after-call.s3.AbortMultipartUpload", count)

    with pytest.raises(StoreUnavailable, match="did not answer"):
        store.put_file(model_key("t1", "m1"), src)

    assert calls["after-call.s3.CreateMultipartUpload"] == 1
    assert calls["after-call.s3.AbortMultipartUpload"] == 1
    assert calls["parts"] >= 2  # one part stored, then the failure
    assert s3_bucket.multipart_uploads() == []
    assert s3_bucket.object_keys() == []
    assert not store.exists(model_key("t1", "m1"))


def test_sweep_aborts_uploads_that_a_killed_writer_left(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """A writer killed mid-upload aborts nothing: its upload (and stored parts) stay until the
    sweep, which leaves uploads younger than the threshold alone."""
    client, bucket = s3_bucket.client, s3_bucket.bucket
    upload = client.create_multipart_upload(Bucket=bucket, Key="sec/models/t1/m1.archive")
    client.upload_part(
        Bucket=bucket,
        Key="sec/models/t1/m1.archive",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * MIN_PART,
    )
    # Another prefix (another deployment sharing the bucket) is not this store's to sweep.
    other = client.create_multipart_upload(Bucket=bucket, Key="other/x")
    store = s3_bucket.store()

    assert store.sweep_partial_writes(older_than_seconds=3600) == 0
    time.sleep(1.1)  # the server's Initiated times have a one-second resolution
    assert store.sweep_partial_writes(older_than_seconds=1) == 1
    assert [u["Key"] for u in s3_bucket.multipart_uploads()] == ["other/x"]
    assert s3_bucket.object_keys() == []
    client.abort_multipart_upload(Bucket=bucket, Key="other/x", UploadId=other["UploadId"])


def test_wrong_checksum_is_refused_and_leaves_no_file(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_bucket.store(multipart_threshold=MIN_PART, multipart_chunksize=MIN_PART)
    src = tmp_path / "ds.csv"
    sha = _write_random(src, 2 * MIN_PART + 1)
    key = dataset_key("t1", "ds1", "csv")
    store.put_file(key, src)

    with pytest.raises(ChecksumMismatch, match="differs"):
        store.get_file(key, tmp_path / "out/ds.csv", "0" * 64)
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its temp file

    # A blob overwritten behind the database's back (its recorded sha256 is the old one).
    (tmp_path / "other.csv").write_bytes(b"other bytes")
    store.put_file(key, tmp_path / "other.csv")
    with pytest.raises(ChecksumMismatch):
        store.get_file(key, tmp_path / "out/ds.csv", sha)
    assert list((tmp_path / "out").iterdir()) == []


def test_unreachable_server_is_store_unavailable_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on the port: every operation fails fast (connection refused, the
    default retries) with StoreUnavailable, the error a job retries on."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "sec-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sec-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = S3BlobStore("sec", "v1", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    src = tmp_path / "ds.csv"
    src.write_bytes(b"a,b\n1,2\n")
    key = dataset_key("t1", "ds1", "csv")

    operations = {
        "put_file": lambda: store.put_file(key, src),
        "get_file": lambda: store.get_file(key, tmp_path / "out/ds.csv"),
        "iter_bytes": lambda: list(store.iter_bytes(key)),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
        "sweep_partial_writes": lambda: store.sweep_partial_writes(3600),
    }
    for name, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            operation()
        # 3 attempts, backoff at most 1 s then 2 s: well under 10 s.
        assert time.monotonic() - started < 10, name
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", ""])
def test_unsafe_keys_are_refused(s3_bucket: S3Bucket, tmp_path: Path, key: str) -> None:
    store = s3_bucket.store()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for operation in (
        lambda: store.put_file(key, src),
        lambda: store.get_file(key, tmp_path / "out"),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKey):
            operation()
    assert s3_bucket.object_keys() == []


# Uploads then downloads a file in a fresh interpreter and prints its peak memory: VmHWM, the
# high-water mark of this process image's resident memory (ru_maxrss would carry over the
# forked test process's, which has loaded torch and much else).
_MEMORY_PROBE = """
import json, re, sys
from pathlib import Path
from app.storage import S3BlobStore
bucket, prefix, endpoint, src, dest, sha = sys.argv[1:]
store = S3BlobStore(bucket, prefix, endpoint_url=endpoint)
store.put_file("models/t1/big.archive", Path(src))
store.get_file("models/t1/big.archive", Path(dest), sha)
hwm_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])
print(json.dumps({"peak_rss_mib": hwm_kib / 1024}))
"""


def test_memory_stays_flat_for_a_big_file(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    """A 256 MiB file goes up (multipart, the default 16 MiB parts, 4 at a time) and comes
    back (streamed) with the process's peak memory far below the file's size: it never holds
    the whole file, so a 2 GB model archive costs the same."""
    size = 256 * MiB
    src = tmp_path / "big.archive"
    sha = _write_random(src, size)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEMORY_PROBE,
            s3_bucket.bucket,
            s3_bucket.prefix,
            s3_bucket.endpoint_url,
            str(src),
            str(tmp_path / "back.archive"),
            sha,
        ],
        cwd=REPO_ROOT,  # `python -c` imports `app` from the current folder
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    peak_mib = json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    # The interpreter with boto3 is ~60 MiB, ~75 MiB at the end of this round trip.
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB for a {size // MiB} MiB file"
    assert _sha256(tmp_path / "back.archive") == sha
