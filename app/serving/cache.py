"""The LRU of loaded models, bounded by count and by approximate memory.

The memory of a model is estimated, not measured: the ONNX file's size (ONNX Runtime keeps
the initialisers in memory, at their stored precision) plus the tokenizer file plus a fixed
allowance for the runtime's buffers (`model.RUNTIME_OVERHEAD_BYTES`). Measuring the process's
resident memory around a load would be noisier than that, with other loads and requests
running in the same process. The newest model is always kept, even if it alone exceeds the
bound: refusing to serve a deployment that was just created would help nobody.

Used from the event loop only, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


V = TypeVar("V", bound=Sized)


class LRUCache(Generic[V]):
    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, V] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[str]:
        """Least recently used first."""
        return list(self._entries)

    @property
    def total_bytes(self) -> int:
        return sum(v.nbytes for v in self._entries.values())

    def get(self, key: str) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> list[tuple[str, V]]:
        """Insert as most recent; return what was evicted (the caller unloads it)."""
        replaced = self._entries.pop(key, None)
        self._entries[key] = value
        evicted = [(key, replaced)] if replaced is not None and replaced is not value else []
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_items or self.total_bytes > self.max_bytes
        ):
            evicted.append(self._entries.popitem(last=False))
        return evicted

    def pop(self, key: str) -> V | None:
        return self._entries.pop(key, None)

    def clear(self) -> list[tuple[str, V]]:
        items = list(self._entries.items())
        self._entries.clear()
        return items
