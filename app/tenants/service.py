"""Creating tenants and API keys, and resolving a presented key to its tenant.

Keys are `sec_` + 43 URL-safe characters (256 random bits). Only the SHA-256 is stored:
with that much entropy a plain hash cannot be brute-forced, and it allows an exact indexed
lookup (a salted slow hash would force scanning every key). The plaintext is returned once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey, Tenant, utcnow
from app.errors import Conflict, NotFound, Unauthorized
from app.tenants import repository as repo

KEY_PREFIX = "sec_"
KEY_RE = re.compile(r"sec_[A-Za-z0-9_\-]{43}")
# Recording every use would turn every GET into a write; once a minute is enough to tell
# which keys are in use.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_tenant(session: Session, name: str) -> Tenant:
    name = name.strip()
    if not name:
        raise ValueError("tenant name must not be empty")
    if repo.get_tenant_by_name(session, name) is not None:
        raise Conflict(f"tenant {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    return repo.get_tenant_by_name(session, name.strip()) or create_tenant(session, name)


def create_api_key(session: Session, tenant_id: str, name: str = "default") -> tuple[ApiKey, str]:
    """Returns the stored row and the plaintext key; the plaintext is not kept anywhere."""
    plaintext = generate_key()
    key = ApiKey(
        tenant_id=tenant_id,
        name=name,
        prefix=plaintext[:12],
        key_hash=hash_key(plaintext),
    )
    session.add(key)
    session.flush()
    return key, plaintext


def revoke_api_key(session: Session, tenant_id: str, key_id: str) -> ApiKey:
    key = repo.get_key(session, tenant_id, key_id)
    if key is None:
        raise NotFound(f"API key {key_id!r} not found")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def presented_key_hash(authorization: str | None) -> str:
    """The hash of the key in an `Authorization` header value, checked for shape only (no
    database). Every failure is a 401 naming what is wrong."""
    if not authorization:
        raise Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>'",
            code="missing_api_key",
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "malformed Authorization header: expected 'Bearer <key>'", code="malformed_api_key"
        )
    if not KEY_RE.fullmatch(token):
        raise Unauthorized(
            "malformed API key: keys look like 'sec_' followed by 43 characters",
            code="malformed_api_key",
        )
    return hash_key(token)


def authenticate_hash(session: Session, key_hash: str) -> tuple[Tenant, ApiKey]:
    """The tenant and key with this hash, from the database; 401 if unknown or revoked."""
    found = repo.get_key_and_tenant(session, key_hash)
    if found is None:
        raise Unauthorized("invalid API key", code="invalid_api_key")
    key, tenant = found
    if key.revoked_at is not None:
        raise Unauthorized("this API key has been revoked", code="revoked_api_key")
    return tenant, key


def authenticate(session: Session, authorization: str | None) -> tuple[Tenant, ApiKey]:
    """Resolve an `Authorization` header value. Every failure is a 401 naming what is wrong."""
    return authenticate_hash(session, presented_key_hash(authorization))


def stamp_due(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION


def record_use(factory: sessionmaker[Session], key: ApiKey) -> None:
    """Stamp the key's `last_used_at`, at most once per `LAST_USED_RESOLUTION`, in a short
    transaction of its own (`factory`: the side pool).

    Not in the request's transaction: the stamp writes the key's row, and that row lock was
    held until the request committed, so once a minute the requests presenting the same key
    in that moment waited for each other to finish (tests/integration/test_key_use_postgres.py).
    A request that finds the stamp fresh writes nothing."""
    now = utcnow()
    if stamp_due(key.last_used_at, now):
        stamp_use(factory, key.id, now)


def stamp_use(factory: sessionmaker[Session], key_id: str, now: datetime) -> None:
    """The conditional write of `record_use` (another process may have stamped meanwhile)."""
    with factory() as session, session.begin():
        repo.stamp_key_used(session, key_id, now, now - LAST_USED_RESOLUTION)
