"""In-process segment cache: LRU, bounded by the bytes of its entries."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LocalSegmentCache:
    """get_many / put_many over an LRU dict; evicts least recently used entries once
    the stored entries exceed max_bytes. Thread-safe."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._d: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        out = []
        with self._lock:
            for k in keys:
                v = self._d.get(k)
                if v is None:
                    self.misses += 1
                else:
                    self.hits += 1
                    self._d.move_to_end(k)
                out.append(v)
        return out

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        with self._lock:
            for k, v in items:
                old = self._d.pop(k, None)
                if old is not None:
                    self._bytes -= len(k) + len(old)
                self._d[k] = v
                self._bytes += len(k) + len(v)
            while self._bytes > self.max_bytes and self._d:
                k, v = self._d.popitem(last=False)
                self._bytes -= len(k) + len(v)
                self.evictions += 1

    def __len__(self) -> int:
        return len(self._d)

    @property
    def nbytes(self) -> int:
        return self._bytes
