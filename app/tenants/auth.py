"""Authentication on the hot path: the presented key's tenant, cached in process.

Every authenticated request needs "which tenant does this key belong to, and is it still
valid". That answer changes only when a key is revoked, so each API process keeps it for
`SEC_AUTH_CACHE_SECONDS` (default 5 s), keyed by the key's SHA-256: a request whose key was
seen in the last few seconds is authenticated without touching the database or leaving the
event loop. What the cache never holds: the key itself (only its hash), and failures (an
unknown, malformed or revoked key is looked up, or refused, every time).

Revocation: the process that revokes a key drops it from its cache when the revocation
commits, so there the key answers 401 at once. Another replica keeps accepting it until its
cached entry expires, at most `SEC_AUTH_CACHE_SECONDS` later. `SEC_AUTH_CACHE_SECONDS=0`
turns the cache off (every request reads the database, as before).

The once-a-minute `last_used_at` stamp (app/tenants/service.py) is tracked here per key, so a
cached key still gets stamped, and only once a minute per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from app.db.models import utcnow
from app.db.session import unit_of_work
from app.tenants import service
from app.ttlcache import TTLCache


@dataclass(frozen=True, slots=True)
class TenantRef:
    """What routes need of the authenticated tenant (read by `TenantOut` too)."""

    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: TenantRef
    key_id: str


class Authenticator:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        side_sessions: sessionmaker[Session],
        *,
        ttl_s: float,
        max_keys: int = 10_000,
    ) -> None:
        self._sessions = sessions
        self._side_sessions = side_sessions
        self.cache: TTLCache[str, Principal] = TTLCache(ttl_s, max_items=max_keys)
        self._stamped: dict[str, datetime] = {}  # key id -> last stamp this process knows of

    # -- on the event loop (no I/O) --------------------------------------------------------

    @staticmethod
    def key_hash(authorization: str | None) -> str:
        """The presented key's hash; 401 when the header is missing or malformed."""
        return service.presented_key_hash(authorization)

    def cached(self, key_hash: str) -> Principal | None:
        return self.cache.get(key_hash)

    def stamp_due(self, principal: Principal) -> bool:
        return service.stamp_due(self._stamped.get(principal.key_id), utcnow())

    def forget_key(self, key_id: str) -> None:
        """Drop a revoked key (called when the revocation commits)."""
        self.cache.drop_where(lambda _hash, p: p.key_id == key_id)

    # -- blocking (a request thread) -------------------------------------------------------

    def load(self, key_hash: str) -> Principal:
        """Read the key and its tenant from the database (401 if unknown or revoked)."""
        with unit_of_work(self._sessions) as session:
            return self.resolve(session, key_hash)

    def resolve(self, session: Session, key_hash: str) -> Principal:
        """`load` inside the caller's transaction; caches the answer."""
        tenant, key = service.authenticate_hash(session, key_hash)
        principal = Principal(TenantRef(tenant.id, tenant.name, tenant.created_at), key.id)
        self.cache.put(key_hash, principal)
        known = self._stamped.get(key.id)
        if key.last_used_at is not None and (known is None or key.last_used_at > known):
            if len(self._stamped) >= self.cache.max_items:
                self._stamped.clear()  # a bound; forgetting only costs an extra stamp
            self._stamped[key.id] = key.last_used_at
        return principal

    def stamp(self, principal: Principal) -> None:
        """Record the key's use (at most once per `LAST_USED_RESOLUTION` per process)."""
        now = utcnow()
        if not service.stamp_due(self._stamped.get(principal.key_id), now):
            return
        self._stamped[principal.key_id] = now  # first: concurrent requests do not all write
        service.stamp_use(self._side_sessions, principal.key_id, now)
