"""Inserting an artifact the way the worker does (file in the store, then the row)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Artifact, ArtifactStatus
from app.db.session import unit_of_work
from app.settings import Settings
from app.storage import store_from_settings


def add_artifact(
    db: sessionmaker[Session],
    settings: Settings,
    tenant_id: str,
    job_id: str,
    tmp_path: Path,
    *,
    ready: bool = True,
    payload: bytes = b"\x1f\x8b fake archive bytes " * 100,
) -> tuple[str, bytes]:
    src = tmp_path / f"{job_id}.tar.gz"
    src.write_bytes(payload)
    key = f"{tenant_id}/{job_id}/artifact.tar.gz"
    store_from_settings(settings).put_file(key, src)
    with unit_of_work(db) as s:
        artifact = Artifact(
            tenant_id=tenant_id,
            job_id=job_id,
            status=(ArtifactStatus.READY if ready else ArtifactStatus.PENDING).value,
            storage_key=key,
            size_bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest() if ready else None,
            files=[{"path": "model.onnx", "size": 10}],
            manifest={"targets_met": {"max_size_mb": True}},
        )
        s.add(artifact)
        s.flush()
        return artifact.id, payload
