"""A small in-process cache whose entries expire `ttl_s` seconds after they were stored.

Used on the hot path for facts that are read on every request and change rarely, where a
few seconds of staleness on another API replica is acceptable and the process that makes
the change drops the entry itself: the tenant behind an API key (app/tenants/auth.py) and a
ready deployment's record (app/deployments/router.py). Bounded in entries (the oldest go
first). Thread-safe: the event loop reads it and request threads fill it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(
        self,
        ttl_s: float,
        *,
        max_items: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (self._clock() + self.ttl_s, value)
            while len(self._entries) > self.max_items:
                self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def drop_where(self, predicate: Callable[[K, V], bool]) -> int:
        """Drop every entry for which `predicate(key, value)` holds; returns how many."""
        with self._lock:
            doomed = [k for k, (_, v) in self._entries.items() if predicate(k, v)]
            for k in doomed:
                del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
