"""Per-tenant request rate limit (429 with `Retry-After`), on the `limits` library.

A moving window of `rate_limit_per_minute` requests per tenant, counted after the key is
authenticated (so the count is per tenant, across all of its keys). The counters live in
Redis when the service has one (every API replica then shares them) and in memory in the
embedded shape (one process). If the counter store is unreachable the request is let
through and a warning logged: the limiter protects the service, it must not take it down.

Without a store round trip per request: a process takes its tenant's requests from the
shared window in leases of `lease_size` at a time (one `hit` of that cost) and spends them
locally, on the event loop, without I/O (`try_local`); only when its lease is spent does a
request go to the store (`check`, in a thread). A lease is `max(1, limit // 100)` requests
(12 at the default 1200/min, so one Redis call per 12 requests), and at most one lease per
tenant is outstanding per process, so all replicas together admit at most
`limit + replicas x lease_size` requests in any window; a limit under 200/min is counted
exactly. When a whole lease no longer fits in the window, requests are taken one at a time,
so the last ones before the limit are exact too. A lease unused for `LEASE_TTL_S` is dropped
(its requests stay counted in the window), so a quiet tenant's count is off by less than a
lease per `LEASE_TTL_S`.

Prediction has its own back-pressure (a bounded queue that answers 429 when full), so it is
not counted here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import structlog
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.errors import TooManyRequests
from app.settings import Settings

log = structlog.get_logger(__name__)

LEASE_TTL_S = 30.0
LEASE_FRACTION = 100  # lease size = limit // LEASE_FRACTION


def storage_url(settings: Settings) -> str:
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.split("://", 1)[0] in ("redis", "rediss"):
        return settings.broker_url
    return "memory://"


class TenantRateLimiter:
    def __init__(
        self,
        per_minute: int,
        url: str = "memory://",
        *,
        lease_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.url = url
        self.lease_size = lease_size or max(1, per_minute // LEASE_FRACTION)
        self._limiter = MovingWindowRateLimiter(storage_from_string(url))
        self._clock = clock
        self._leases: dict[str, tuple[int, float]] = {}  # tenant -> (requests left, taken at)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantRateLimiter:
        return cls(settings.rate_limit_per_minute, storage_url(settings))

    def try_local(self, tenant_id: str) -> bool:
        """Count one request against the process's lease, without I/O; False when there is
        no live lease left (then `check` decides, and may take a new one)."""
        with self._lock:
            left, taken = self._leases.get(tenant_id, (0, 0.0))
            if left <= 0 or self._clock() - taken > LEASE_TTL_S:
                return False
            self._leases[tenant_id] = (left - 1, taken)
            return True

    def check(self, tenant_id: str) -> None:
        """Count one request for the tenant; raise 429 once its window is full. May call the
        counter store: run it off the event loop when that is Redis."""
        if self.try_local(tenant_id):
            return
        try:
            granted = self._take(tenant_id)
            if granted:
                with self._lock:
                    self._leases[tenant_id] = (granted - 1, self._clock())
                return
            reset_at = self._limiter.get_window_stats(self.item, "tenant", tenant_id).reset_time
        except Exception:  # the counter store is down: fail open, loudly
            log.warning("rate_limit_store_unavailable", exc_info=True)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise TooManyRequests(
            f"rate limit exceeded: {self.item.amount} requests per minute per tenant;"
            f" retry in {retry_after} s",
            code="rate_limited",
            headers={"Retry-After": str(retry_after)},
        )

    def _take(self, tenant_id: str) -> int:
        """Requests taken from the shared window: a whole lease, else one, else none."""
        if self.lease_size > 1 and self._limiter.hit(
            self.item, "tenant", tenant_id, cost=self.lease_size
        ):
            return self.lease_size
        return 1 if self._limiter.hit(self.item, "tenant", tenant_id) else 0

    @property
    def needs_io(self) -> bool:
        """Whether `check` may wait on a network store (then it belongs in a thread)."""
        return not self.url.startswith("memory://")
