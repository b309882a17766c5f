"""Queries for datasets; every one filters by tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.db.models import Dataset
from app.pagination import paginate


def get(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    )


class DatasetFit(NamedTuple):
    """What a job's spec needs of a dataset it names: whether it fits, and where it is."""

    id: str
    summary: dict[str, Any]
    has_pairs: bool
    storage_key: str | None
    sha256: str
    storage_path: str | None


_FITS = select(
    Dataset.id,
    Dataset.summary,
    Dataset.has_pairs,
    Dataset.storage_key,
    Dataset.sha256,
    Dataset.storage_path,
).where(
    Dataset.tenant_id == bindparam("tenant_id"), Dataset.id.in_(bindparam("ids", expanding=True))
)


def fits(session: Session, tenant_id: str, dataset_ids: Sequence[str]) -> dict[str, DatasetFit]:
    """The tenant's datasets among `dataset_ids`, by id, in one query (Core: no ORM rows)."""
    rows = session.connection().execute(_FITS, {"tenant_id": tenant_id, "ids": list(dataset_ids)})
    return {row.id: DatasetFit(*row) for row in rows}


def list_page(
    session: Session, tenant_id: str, *, cursor: str | None, limit: int
) -> tuple[Sequence[Dataset], str | None]:
    stmt = select(Dataset).where(Dataset.tenant_id == tenant_id)
    return paginate(session, stmt, Dataset.created_at, Dataset.id, cursor=cursor, limit=limit)
