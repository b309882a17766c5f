"""Queries for tenants and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from app.db.models import ApiKey, Tenant


def get_tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


# Built once: the submit path runs it (Core, on the session's connection). `FOR NO KEY
# UPDATE`, not `FOR UPDATE`: it excludes the other submits of the tenant all the same, but not
# the `FOR KEY SHARE` lock a foreign-key check takes on the tenant's row. A submit inserts its
# Idempotency-Key row (a foreign key to the tenant) before it takes this lock, so with `FOR
# UPDATE` two submits of one tenant deadlock, each waiting for the other's key-share lock.
_LOCK_TENANT = (
    select(Tenant.id).where(Tenant.id == bindparam("tenant_id")).with_for_update(key_share=True)
)


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Serialise per-tenant decisions (quota checks) across API replicas. A row lock on
    Postgres; SQLite has no row locks but serialises writers anyway."""
    session.connection().execute(_LOCK_TENANT, {"tenant_id": tenant_id})


def get_key_and_tenant(session: Session, key_hash: str) -> tuple[ApiKey, Tenant] | None:
    """The key with this hash and its tenant, in one round trip (every request authenticates)."""
    row = session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == key_hash)
    ).one_or_none()
    return None if row is None else (row[0], row[1])


def stamp_key_used(session: Session, key_id: str, now: datetime, stale_before: datetime) -> None:
    """Set `last_used_at = now` unless another request already stamped it since
    `stale_before` (the WHERE is re-checked after waiting for a concurrent stamp's lock)."""
    session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < stale_before),
        )
        .values(last_used_at=now)
    )


def get_key(session: Session, tenant_id: str, key_id: str) -> ApiKey | None:
    return session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))


def list_keys(session: Session, tenant_id: str) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey)
        .where(ApiKey.tenant_id == tenant_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    ).all()
