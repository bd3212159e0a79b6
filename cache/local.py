"""In-process segment cache: LRU, bounded by the bytes of its entries."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LocalSegmentCache:
    """get_many / put_many over an LRU dict; evicts least recently used entries once
    the stored entries exceed max_bytes. Counts hits per entry, so that the hottest
    entries can outlive the run (`hottest`, `load`). Thread-safe."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._d: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._hits: dict[bytes, int] = {}
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
                    self._hits[k] = self._hits.get(k, 0) + 1
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
                self._hits.pop(k, None)
                self.evictions += 1

    def hottest(self, max_bytes: int) -> list[tuple[bytes, bytes, int]]:
        """(key, entry, hits) of the most used entries, the most recent first among
        equals, up to max_bytes of entries. Entries never hit come last but count: the
        next slice of a corpus shares segments that this one saw only once."""
        with self._lock:
            recent_first = [(k, self._hits.get(k, 0)) for k in reversed(self._d)]
            out, size = [], 0
            for k, hits in sorted(recent_first, key=lambda kv: -kv[1]):  # a stable sort
                v = self._d[k]
                if size + len(k) + len(v) > max_bytes:
                    break
                out.append((k, v, hits))
                size += len(k) + len(v)
            return out

    def load(self, items: list[tuple[bytes, bytes, int]]) -> int:
        """Entries kept by an earlier run; their hit counts are halved, so that what was
        hot long ago makes way for what is hot now. Returns how many were taken."""
        self.put_many([(k, v) for k, v, _ in items])
        with self._lock:
            for k, _, hits in items:
                if k in self._d and hits // 2:
                    self._hits[k] = self._hits.get(k, 0) + hits // 2
            return sum(1 for k, _, _ in items if k in self._d)

    def __len__(self) -> int:
        return len(self._d)

    @property
    def nbytes(self) -> int:
        return self._bytes
