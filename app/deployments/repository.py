"""Queries for deployments. User-facing ones filter by tenant; the by-id ones are for the
serving engine, which acts on a deployment it was already authorised for."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import Artifact, Deployment, DeploymentStatus, utcnow
from app.pagination import paginate


def get(session: Session, tenant_id: str, deployment_id: str) -> Deployment | None:
    return session.scalar(
        select(Deployment).where(Deployment.id == deployment_id, Deployment.tenant_id == tenant_id)
    )


def list_page(
    session: Session, tenant_id: str, *, cursor: str | None, limit: int
) -> tuple[Sequence[Deployment], str | None]:
    stmt = select(Deployment).where(Deployment.tenant_id == tenant_id)
    return paginate(session, stmt, Deployment.created_at, Deployment.id, cursor=cursor, limit=limit)


def with_artifact(session: Session, deployment_id: str) -> tuple[Deployment, Artifact] | None:
    row = session.execute(
        select(Deployment, Artifact)
        .join(Artifact, Artifact.id == Deployment.artifact_id)
        .where(Deployment.id == deployment_id, Artifact.tenant_id == Deployment.tenant_id)
    ).first()
    return None if row is None else (row[0], row[1])


def transition(
    session: Session,
    deployment_id: str,
    *,
    from_: Sequence[DeploymentStatus],
    to: DeploymentStatus,
    error_message: str | None = None,
) -> bool:
    """Conditional update: a deployment deleted or settled meanwhile is left alone."""
    result = session.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.status.in_([s.value for s in from_]))
        .values(status=to.value, error_message=error_message, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
