"""The blob store: every byte that crosses machines (uploaded datasets and models, teacher
checkpoints, artifacts) lives here, in a local directory (the embedded shape, one machine) or
an S3-compatible bucket (several machines: nothing assumes the API and a worker share a disk).

Keys are relative, slash-separated paths; the helpers below name them
(`dataset_key`, `model_key`, `checkpoint_key`, `artifact_key`). A key with `..`, a leading
slash or a backslash is refused, so a key can never name a file outside the store. Writes are
atomic: a reader sees the old object or the whole new one, never a part. Reads that know the
blob's sha256 (`get_file`) verify it and refuse a mismatch.

Errors a caller can act on: `BlobNotFound` (no such key), `ChecksumMismatch` (the bytes are
not the ones recorded: never used), `StoreUnavailable` (the store could not be reached after
the client's retries: a job retries later rather than fail).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from app.settings import Settings

CHUNK = 1024 * 1024

logger = logging.getLogger(__name__)


class InvalidKey(ValueError):
    """The storage key could escape the store or is not a plain relative path."""


class BlobNotFound(LookupError):
    """No blob is stored under the key."""


class ChecksumMismatch(ValueError):
    """A blob's bytes do not hash to the sha256 recorded for it."""


class StoreUnavailable(RuntimeError):
    """The store did not answer (connection refused, timeouts, 5xx) after the client's retries."""


def dataset_key(tenant_id: str, dataset_id: str, fmt: str) -> str:
    return f"datasets/{tenant_id}/{dataset_id}.{fmt}"


def model_key(tenant_id: str, model_id: str) -> str:
    """The model archive as the user uploaded it (validated at upload, re-checked on extract)."""
    return f"models/{tenant_id}/{model_id}.archive"


def checkpoint_key(tenant_id: str, job_id: str) -> str:
    """The job's teacher-phase checkpoint folder, as one tar (one object: atomic)."""
    return f"checkpoints/{tenant_id}/{job_id}.tar"


def artifact_key(tenant_id: str, job_id: str, artifact_id: str) -> str:
    return f"{tenant_id}/{job_id}/{artifact_id}.tar.gz"


def check_key(key: str) -> str:
    if not key or "\\" in key or "\x00" in key:
        raise InvalidKey(f"invalid storage key {key!r}")
    path = PurePosixPath(key)
    if path.is_absolute() or any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKey(f"invalid storage key {key!r}: must be a relative path without '..'")
    return key


class BlobStore(Protocol):
    def put_file(self, key: str, src_path: Path) -> None:
        """Store the file at `src_path` under `key`, atomically (all or nothing), streaming
        (multipart on S3 for big files): memory stays flat whatever the size."""
        ...

    def get_file(self, key: str, dest_path: Path, sha256: str | None = None) -> None:
        """Stream the blob into `dest_path` (atomically: a temp file renamed into place).
        With `sha256`, the bytes are hashed on the way and a mismatch raises ChecksumMismatch
        with nothing left at `dest_path`. BlobNotFound if there is no such key."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]: ...

    def path_for(self, key: str) -> Path | None:
        """A local file path for `key` (lets the API send it with sendfile), or None."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def sweep_partial_writes(self, older_than_seconds: float) -> int:
        """Remove what interrupted writes left behind, if older than the threshold; the count."""
        ...


# `put_file`'s temporary names: `.<archive name>.<random>.tmp`, next to the final file.
PARTIAL_WRITE_GLOB = ".*.tmp"


def _stream_to(dest_path: Path, chunks: Iterator[bytes], key: str, sha256: str | None) -> None:
    """Write `chunks` to `dest_path` via a temp file beside it, hashing as it goes."""
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(
        dir=dest_path.parent, prefix=f".{dest_path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ChecksumMismatch(
                f"blob {key!r}: sha256 {digest.hexdigest()} differs from the recorded {sha256}"
            )
        os.replace(tmp_name, dest_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, src_path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The temp file is in the destination folder, so os.replace is a same-filesystem
        # rename: atomic, and a crash leaves at worst a stray `.tmp` file, never half an archive.
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, src_path.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise

    def get_file(self, key: str, dest_path: Path, sha256: str | None = None) -> None:
        if not self.exists(key):
            raise BlobNotFound(f"no blob {key!r}")
        _stream_to(dest_path, self.iter_bytes(key), key, sha256)

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self.open(key) as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def path_for(self, key: str) -> Path | None:
        return self._path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def sweep_partial_writes(self, older_than_seconds: float) -> int:
        """Delete temporary files of `put_file` calls whose writer died (SIGKILL mid-copy).

        Only files untouched for `older_than_seconds` go: a live writer touches its file at
        every chunk, so a threshold far above one chunk's write time never races it.
        """
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.root.rglob(PARTIAL_WRITE_GLOB):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


class S3BlobStore:
    """S3 or any S3-compatible server (SeaweedFS, MinIO, R2...). Needs boto3 (the `s3` extra).

    A PUT, or a completed multipart upload, becomes visible all at once: uploads are atomic by
    nature. Files above `multipart_threshold` go up in `multipart_chunksize` parts, a few at a
    time, and downloads stream in `CHUNK`s, so memory stays flat whatever the size. A failed
    multipart upload is aborted by boto3's transfer manager; one whose process died is aborted
    by `sweep_partial_writes` (and by the bucket's AbortIncompleteMultipartUpload rule).

    Every call has connect/read timeouts and a bounded number of attempts ("standard" retries:
    connection errors, throttling and 5xx, with backoff); what still fails is StoreUnavailable.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        *,
        multipart_threshold: int = 16 * 1024 * 1024,
        multipart_chunksize: int = 16 * 1024 * 1024,
        max_concurrency: int = 4,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "an s3:// blob store needs boto3: pip install 'sec-service[s3]'"
            ) from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # total_max_attempts counts the first try (botocore's max_attempts does not).
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            # Servers on an endpoint URL (SeaweedFS, MinIO) serve /bucket/key, not
            # bucket.host/key; AWS itself keeps its default (virtual-hosted) style.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url, config=config)
        # At most max_concurrency parts in memory at once.
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, src_path: Path) -> None:
        s3_key = self._key(key)
        with _s3_errors(key):
            self._client.upload_file(str(src_path), self.bucket, s3_key, Config=self._transfer)

    def get_file(self, key: str, dest_path: Path, sha256: str | None = None) -> None:
        # One GET, streamed into a temp file and hashed on the way (no HEAD first: the object
        # could go between the two). iter_bytes raises the store's errors; _stream_to then
        # removes the temp file.
        _stream_to(dest_path, self.iter_bytes(key), key, sha256)

    def open(self, key: str) -> BinaryIO:
        """The object's body, a file-like stream. Errors while reading it are botocore's; use
        `iter_bytes` or `get_file` to get them as StoreUnavailable."""
        s3_key = self._key(key)
        with _s3_errors(key):
            body: BinaryIO = self._client.get_object(Bucket=self.bucket, Key=s3_key)["Body"]
        return body

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        body = self.open(key)
        try:
            with _s3_errors(key):
                while chunk := body.read(chunk_size):
                    yield chunk
        finally:
            body.close()

    def path_for(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        s3_key = self._key(key)
        try:
            with _s3_errors(key):
                self._client.head_object(Bucket=self.bucket, Key=s3_key)
        except BlobNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        s3_key = self._key(key)
        with _s3_errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=s3_key)

    def sweep_partial_writes(self, older_than_seconds: float) -> int:
        """Abort the multipart uploads under this store's prefix started more than
        `older_than_seconds` ago: what a writer killed mid-upload left (an interrupted single
        PUT leaves nothing). Uploads of live writers are younger than any sane threshold."""
        cutoff = time.time() - older_than_seconds
        prefix = f"{self.prefix}/" if self.prefix else ""
        aborted = 0
        with _s3_errors(prefix):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        return aborted


# botocore error codes that mean "no such object" (HEAD answers a bare 404).
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@contextlib.contextmanager
def _s3_errors(key: str) -> Iterator[None]:
    """Translate botocore's errors into the store's: BlobNotFound for a missing object,
    StoreUnavailable for what the retries could not get through (connection refused or
    reset, timeouts, 5xx, throttling). Others (access denied, no such bucket: configuration
    errors) pass through unchanged."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        IncompleteReadError,
    )
    from botocore.exceptions import ConnectionError as S3ConnectionError

    try:
        yield
    except (S3ConnectionError, HTTPClientError, IncompleteReadError) as exc:
        raise StoreUnavailable(f"blob {key!r}: the S3 store did not answer: {exc}") from exc
    except (ClientError, S3UploadFailedError) as exc:
        # upload_file re-raises a ClientError as S3UploadFailedError, the original as context.
        error = exc if isinstance(exc, ClientError) else exc.__context__
        if not isinstance(error, ClientError):
            raise
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _NOT_FOUND_CODES:
            raise BlobNotFound(f"no blob {key!r}") from exc
        if status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout"):
            raise StoreUnavailable(f"blob {key!r}: the S3 store failed: {error}") from exc
        raise


def store_from_url(url: str, *, s3_endpoint_url: str | None = None) -> BlobStore:
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"store URL {url!r} names no bucket")
        return S3BlobStore(bucket, prefix, endpoint_url=s3_endpoint_url)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"unsupported store URL {url!r}: use file://PATH, a path, or s3://")
    return LocalBlobStore(Path(url.removeprefix("file://")))


def store_from_settings(settings: Settings) -> BlobStore:
    return store_from_url(settings.store_url, s3_endpoint_url=settings.s3_endpoint_url)


def delete_quietly(store: BlobStore, key: str) -> None:
    """Delete a blob nothing will point at (a rolled-back upload, an ended job's checkpoint).
    If the store cannot be reached now, the blob stays an orphan: it costs space, nothing
    else, so this logs rather than fail what the caller is doing."""
    try:
        store.delete(key)
    except StoreUnavailable:
        logger.warning("could not delete the blob %s: the store is unavailable", key)
