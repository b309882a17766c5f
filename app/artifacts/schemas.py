"""Artifact shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.db.models import Artifact


class ArtifactOut(BaseModel):
    id: str
    job_id: str
    status: str
    size_bytes: int
    sha256: str | None
    files: list[Any]
    manifest: dict[str, Any]
    download_url: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, artifact: Artifact) -> ArtifactOut:
        ready = artifact.status == "ready"
        return cls(
            id=artifact.id,
            job_id=artifact.job_id,
            status=artifact.status,
            size_bytes=artifact.size_bytes,
            sha256=artifact.sha256,
            files=artifact.files,
            manifest=artifact.manifest,
            download_url=f"/v1/artifacts/{artifact.id}/download" if ready else None,
            created_at=artifact.created_at,
            updated_at=artifact.updated_at,
        )


class ArtifactList(BaseModel):
    data: list[ArtifactOut]
