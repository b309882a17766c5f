"""The LRU of loaded models: count bound, memory bound, recency."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.serving.cache import LRUCache

pytestmark = pytest.mark.unit


@dataclass
class Blob:
    nbytes: int


def test_count_bound_evicts_least_recently_used() -> None:
    cache: LRUCache[Blob] = LRUCache(max_items=2, max_bytes=10**9)
    assert cache.put("a", Blob(1)) == []
    assert cache.put("b", Blob(1)) == []
    assert cache.get("a") is not None  # a is now the most recent
    evicted = cache.put("c", Blob(1))
    assert [k for k, _ in evicted] == ["b"]
    assert cache.keys() == ["a", "c"]


def test_memory_bound_evicts_until_it_fits_but_keeps_the_newest() -> None:
    cache: LRUCache[Blob] = LRUCache(max_items=10, max_bytes=100)
    cache.put("a", Blob(40))
    cache.put("b", Blob(40))
    evicted = cache.put("c", Blob(50))  # 130 > 100: drop a (oldest) -> 90
    assert [k for k, _ in evicted] == ["a"]
    assert cache.total_bytes == 90
    evicted = cache.put("huge", Blob(500))  # alone over the bound: still kept
    assert [k for k, _ in evicted] == ["b", "c"]
    assert cache.keys() == ["huge"]


def test_replacing_a_key_returns_the_old_value() -> None:
    cache: LRUCache[Blob] = LRUCache(max_items=2, max_bytes=100)
    old = Blob(1)
    cache.put("a", old)
    assert cache.put("a", Blob(2)) == [("a", old)]
    assert cache.pop("a") == Blob(2)
    assert cache.pop("a") is None
