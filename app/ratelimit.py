"""Per-tenant request rate limit (429 with `Retry-After`), on the `limits` library.

A moving window of `rate_limit_per_minute` requests per tenant, counted after the key is
authenticated (so the count is per tenant, across all of its keys). The counters live in
Redis when the service has one (every API replica then shares them) and in memory in the
embedded shape (one process). If the counter store is unreachable the request is let
through and a warning logged: the limiter protects the service, it must not take it down.

Prediction has its own back-pressure (a bounded queue that answers 429 when full), so it is
not counted here.
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.errors import TooManyRequests
from app.settings import Settings

log = structlog.get_logger(__name__)


def storage_url(settings: Settings) -> str:
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.split("://", 1)[0] in ("redis", "rediss"):
        return settings.broker_url
    return "memory://"


class TenantRateLimiter:
    def __init__(self, per_minute: int, url: str = "memory://") -> None:
        self.item = RateLimitItemPerMinute(per_minute)
        self.url = url
        self._limiter = MovingWindowRateLimiter(storage_from_string(url))

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantRateLimiter:
        return cls(settings.rate_limit_per_minute, storage_url(settings))

    def check(self, tenant_id: str) -> None:
        """Count one request for the tenant; raise 429 once its window is full."""
        try:
            allowed = self._limiter.hit(self.item, "tenant", tenant_id)
            if allowed:
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
