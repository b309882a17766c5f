"""The hot path's caches: key -> tenant (TTL, dropped on revocation), the TTL cache itself, and
the rate limiter's local leases. No timing is asserted: the clocks are fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import ApiKey, utcnow
from app.db.session import unit_of_work
from app.errors import TooManyRequests, Unauthorized
from app.ratelimit import LEASE_TTL_S, TenantRateLimiter
from app.tenants import service as tenants
from app.tenants.auth import Authenticator
from app.ttlcache import TTLCache
from tests.app.conftest import TenantKey

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_cache_expires_bounds_and_drops() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(5.0, max_items=2, clock=clock)
    cache.put("a", 1)
    clock.now += 4.9
    assert cache.get("a") == 1
    clock.now += 0.2
    assert cache.get("a") is None  # expired
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)  # over the bound: the oldest goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
    assert cache.drop_where(lambda _k, v: v == 2) == 1
    assert cache.get("b") is None
    off: TTLCache[str, int] = TTLCache(0.0)
    off.put("a", 1)
    assert off.get("a") is None  # ttl 0: never cached


def _authenticator(db: sessionmaker[Session], clock: Clock) -> Authenticator:
    auth = Authenticator(db, db, ttl_s=5.0)
    auth.cache = TTLCache(5.0, clock=clock)
    return auth


def test_a_cached_key_skips_the_database_until_its_ttl(
    client: TestClient, tenant_a: TenantKey, db: sessionmaker[Session]
) -> None:
    clock = Clock()
    auth = _authenticator(db, clock)
    key_hash = auth.key_hash(f"Bearer {tenant_a.key}")
    assert auth.cached(key_hash) is None
    principal = auth.load(key_hash)
    assert principal.tenant.id == tenant_a.id
    assert principal.key_id == tenant_a.key_id
    assert auth.cached(key_hash) == principal

    # Revoked behind this process's back (another replica): still trusted until the TTL ends...
    with unit_of_work(db) as s:
        s.execute(update(ApiKey).where(ApiKey.id == tenant_a.key_id).values(revoked_at=utcnow()))
    clock.now += 4.0
    assert auth.cached(key_hash) == principal
    # ... then read again, and refused.
    clock.now += 1.5
    assert auth.cached(key_hash) is None
    with pytest.raises(Unauthorized, match="revoked"):
        auth.load(key_hash)
    assert auth.cached(key_hash) is None  # failures are never cached


def test_revocation_in_this_process_drops_the_key_at_once(
    tenant_a: TenantKey, db: sessionmaker[Session]
) -> None:
    auth = _authenticator(db, Clock())
    key_hash = auth.key_hash(f"Bearer {tenant_a.key}")
    auth.load(key_hash)
    auth.forget_key(tenant_a.key_id)
    assert auth.cached(key_hash) is None


def test_revoking_through_the_api_refuses_a_cached_key_at_once(
    client: TestClient, tenant_a: TenantKey
) -> None:
    second = client.post("/v1/keys", headers=tenant_a.headers, json={"name": "b"}).json()
    headers = {"Authorization": f"Bearer {second['key']}"}
    for _ in range(3):  # cached by now
        assert client.get("/v1/me", headers=headers).status_code == 200
    assert client.delete(f"/v1/keys/{second['id']}", headers=tenant_a.headers).status_code == 200
    r = client.get("/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "revoked_api_key"


def test_a_cached_key_is_still_stamped_once_a_minute(
    tenant_a: TenantKey, db: sessionmaker[Session]
) -> None:
    auth = _authenticator(db, Clock())
    principal = auth.load(auth.key_hash(f"Bearer {tenant_a.key}"))
    assert auth.stamp_due(principal)  # never used
    auth.stamp(principal)
    assert not auth.stamp_due(principal)
    with db() as s:
        stamped = s.get(ApiKey, tenant_a.key_id)
        assert stamped is not None
        assert stamped.last_used_at is not None
    auth._stamped[principal.key_id] = utcnow() - 2 * tenants.LAST_USED_RESOLUTION
    assert auth.stamp_due(principal)
    assert tenants.stamp_due(None, utcnow())
    assert not tenants.stamp_due(utcnow() - timedelta(seconds=5), utcnow())


def test_rate_limit_leases_count_locally_and_stay_within_the_limit() -> None:
    clock = Clock()
    limiter = TenantRateLimiter(10, lease_size=4, clock=clock)
    assert not limiter.try_local("t")  # no lease yet: the store decides
    limiter.check("t")  # takes a lease of 4, spends 1
    assert [limiter.try_local("t") for _ in range(4)] == [True, True, True, False]
    for _ in range(6):  # 4 more (a lease), then 2 one at a time: 10 in all
        limiter.check("t")
    with pytest.raises(TooManyRequests) as info:
        limiter.check("t")
    assert info.value.headers is not None
    assert "Retry-After" in info.value.headers
    assert limiter.try_local("other") is False
    limiter.check("other")  # per tenant


def test_an_idle_lease_is_dropped() -> None:
    clock = Clock()
    limiter = TenantRateLimiter(1000, lease_size=10, clock=clock)
    limiter.check("t")
    assert limiter.try_local("t")
    clock.now += LEASE_TTL_S + 1
    assert not limiter.try_local("t")


def test_small_limits_are_counted_exactly() -> None:
    limiter = TenantRateLimiter(5)
    assert limiter.lease_size == 1
    for _ in range(5):
        limiter.check("t")
    with pytest.raises(TooManyRequests):
        limiter.check("t")
