"""Building the download response for a ready artifact."""

from __future__ import annotations

import base64
import stat
from pathlib import PurePosixPath

from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from app.artifacts import repository as repo
from app.db.models import Artifact, ArtifactStatus
from app.errors import Conflict, InternalError, NotFound
from app.storage import BlobStore


class ArchiveResponse(FileResponse):
    """A stored archive, read in 1 MiB chunks (Starlette's default is 64 KiB): each chunk is a
    thread-pool hop, and archives are megabytes."""

    chunk_size = 1024 * 1024


def checksum_headers(sha256_hex: str) -> dict[str, str]:
    """The archive's sha256 in the header forms clients know: our explicit one, RFC 9530
    `Content-Digest`, and the older RFC 3230 `Digest`."""
    b64 = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    return {
        "X-Checksum-SHA256": sha256_hex,
        "Content-Digest": f"sha-256=:{b64}:",
        "Digest": f"sha-256={b64}",
    }


def download_filename(artifact: Artifact) -> str:
    name = PurePosixPath(artifact.storage_key).name
    suffix = "".join(PurePosixPath(name).suffixes) or ".tar.gz"
    return f"{artifact.id}{suffix}"


def download(session: Session, tenant_id: str, artifact_id: str, store: BlobStore) -> Response:
    """The tenant's artifact's archive as a response (or 404 / 409)."""
    artifact = repo.get(session, tenant_id, artifact_id)
    if artifact is None:
        raise NotFound(f"artifact {artifact_id!r} not found")
    return download_response(artifact, store)


def download_response(artifact: Artifact, store: BlobStore) -> Response:
    if artifact.status != ArtifactStatus.READY or not artifact.sha256:
        raise Conflict(
            f"artifact {artifact.id!r} is not ready (status {artifact.status})",
            code="artifact_not_ready",
        )
    headers = checksum_headers(artifact.sha256)
    filename = download_filename(artifact)
    path = store.path_for(artifact.storage_key)
    if path is not None:
        # Stat here (this runs in a thread already) rather than in the response, which
        # would take another thread-pool hop for it.
        try:
            found = path.stat()
        except FileNotFoundError:
            found = None
        if found is None or not stat.S_ISREG(found.st_mode):
            raise InternalError(
                f"the file of artifact {artifact.id!r} is missing from the store",
                code="artifact_missing",
            )
        return ArchiveResponse(
            path,
            media_type="application/gzip",
            filename=filename,
            headers=headers,
            stat_result=found,
        )
    if not store.exists(artifact.storage_key):
        raise InternalError(
            f"the file of artifact {artifact.id!r} is missing from the store",
            code="artifact_missing",
        )
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if artifact.size_bytes:
        headers["Content-Length"] = str(artifact.size_bytes)
    return StreamingResponse(
        store.iter_bytes(artifact.storage_key), media_type="application/gzip", headers=headers
    )
