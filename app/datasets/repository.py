"""Queries for datasets; every one filters by tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dataset
from app.pagination import paginate


def get(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    )


def list_page(
    session: Session, tenant_id: str, *, cursor: str | None, limit: int
) -> tuple[Sequence[Dataset], str | None]:
    stmt = select(Dataset).where(Dataset.tenant_id == tenant_id)
    return paginate(session, stmt, Dataset.created_at, Dataset.id, cursor=cursor, limit=limit)
