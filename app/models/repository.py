"""Queries for uploaded models; every one filters by tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Model


def get(session: Session, tenant_id: str, model_id: str) -> Model | None:
    return session.scalar(select(Model).where(Model.id == model_id, Model.tenant_id == tenant_id))


def where_stored(
    session: Session, tenant_id: str, model_id: str
) -> tuple[str | None, str, str | None] | None:
    """The tenant's model `model_id`'s blob key, archive sha256 and (a row from before the
    blob store) folder; None when the tenant has no such model."""
    row = session.execute(
        select(Model.storage_key, Model.sha256, Model.storage_path).where(
            Model.id == model_id, Model.tenant_id == tenant_id
        )
    ).first()
    return None if row is None else (row.storage_key, row.sha256, row.storage_path)


def list_all(session: Session, tenant_id: str) -> Sequence[Model]:
    return session.scalars(
        select(Model)
        .where(Model.tenant_id == tenant_id)
        .order_by(Model.created_at.desc(), Model.id.desc())
    ).all()
