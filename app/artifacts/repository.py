"""Queries for artifacts; every one filters by tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.db.models import Artifact

# Built once: downloads read it on every request.
_GET = select(Artifact).where(
    Artifact.id == bindparam("artifact_id"), Artifact.tenant_id == bindparam("tenant_id")
)


def get(session: Session, tenant_id: str, artifact_id: str) -> Artifact | None:
    return session.scalar(_GET, {"artifact_id": artifact_id, "tenant_id": tenant_id})


def for_job(session: Session, tenant_id: str, job_id: str) -> Sequence[Artifact]:
    return session.scalars(
        select(Artifact)
        .where(Artifact.job_id == job_id, Artifact.tenant_id == tenant_id)
        .order_by(Artifact.created_at)
    ).all()
