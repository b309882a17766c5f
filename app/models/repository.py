"""Queries for uploaded models; every one filters by tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Model


def get(session: Session, tenant_id: str, model_id: str) -> Model | None:
    return session.scalar(select(Model).where(Model.id == model_id, Model.tenant_id == tenant_id))


def storage_path(session: Session, tenant_id: str, model_id: str) -> str | None:
    """The folder of the tenant's model `model_id` (None when the tenant has no such model)."""
    return session.scalar(
        select(Model.storage_path).where(Model.id == model_id, Model.tenant_id == tenant_id)
    )


def list_all(session: Session, tenant_id: str) -> Sequence[Model]:
    return session.scalars(
        select(Model)
        .where(Model.tenant_id == tenant_id)
        .order_by(Model.created_at.desc(), Model.id.desc())
    ).all()
