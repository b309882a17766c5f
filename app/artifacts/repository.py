"""Queries for artifacts; every one filters by tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Artifact


def get(session: Session, tenant_id: str, artifact_id: str) -> Artifact | None:
    return session.scalar(
        select(Artifact).where(Artifact.id == artifact_id, Artifact.tenant_id == tenant_id)
    )


def for_job(session: Session, tenant_id: str, job_id: str) -> Sequence[Artifact]:
    return session.scalars(
        select(Artifact)
        .where(Artifact.job_id == job_id, Artifact.tenant_id == tenant_id)
        .order_by(Artifact.created_at)
    ).all()
