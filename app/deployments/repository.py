"""Queries for deployments; every one filters by tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Deployment
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
