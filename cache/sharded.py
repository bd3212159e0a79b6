"""The global segment cache as several shards: the shard itself (an LRU that a Ray actor
wraps in a job) and the client that spreads keys over shards. Nothing here knows Ray:
the client takes how to call a shard and how to wait for the answer, so it runs the
same over actors and over plain objects in one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .config import CacheConfig
from .local import LocalSegmentCache


class CacheShard(LocalSegmentCache):
    """One shard of the global segment cache."""

    def stats(self) -> dict:
        return {"entries": len(self), "bytes": self.nbytes, "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions, "max_bytes": self.max_bytes}

    def pid(self) -> int:
        return os.getpid()


def _direct(method, arg):
    return method(arg)


def _same(value):
    return value


class ShardedCache:
    """get_many / put_many over cache shards, keys spread by their first byte. Lookups to
    all shards are issued before any answer is awaited; a failed shard counts as a miss
    (the entry is recomputed), never as an error.

    invoke(method, arg) starts a call (Ray: `lambda m, a: m.remote(a)`), wait(call) gets
    its answer (Ray: `ray.get`); the defaults call plain objects directly."""

    def __init__(self, shards: list, cfg: CacheConfig, invoke: Callable = _direct, wait: Callable = _same):
        self.shards, self.cfg, self.invoke, self.wait = shards, cfg, invoke, wait

    def _owner(self, key: bytes) -> int:
        return key[0] % len(self.shards)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        by_shard: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_shard.setdefault(self._owner(k), []).append(i)
        out: list[bytes | None] = [None] * len(keys)
        calls = []
        for s, idx in by_shard.items():
            for a in range(0, len(idx), self.cfg.batch):
                part = idx[a : a + self.cfg.batch]
                calls.append((part, self.invoke(self.shards[s].get_many, [keys[i] for i in part])))
        for part, call in calls:
            try:
                values = self.wait(call)
            except Exception:  # noqa: BLE001 - a lost cache shard only costs recomputation
                continue
            for i, v in zip(part, values):
                out[i] = v
        return out

    def put_many(self, items: list[tuple[bytes, bytes]]) -> None:
        by_shard: dict[int, list] = {}
        for k, v in items:
            by_shard.setdefault(self._owner(k), []).append((k, v))
        for s, part in by_shard.items():
            try:
                self.invoke(self.shards[s].put_many, part)  # fire and forget
            except Exception:  # noqa: BLE001
                pass

    def _each(self, method: str, args: list) -> list:
        calls = [self.invoke(getattr(shard, method), a) for shard, a in zip(self.shards, args)]
        return [self.wait(c) for c in calls]

    def hottest(self, max_bytes: int) -> list[tuple[bytes, bytes, int]]:
        """The most used entries of every shard, max_bytes in all."""
        parts = self._each("hottest", [max_bytes // len(self.shards)] * len(self.shards))
        return sorted((item for part in parts for item in part), key=lambda item: -item[2])  # stable: recency kept

    def load(self, items: list[tuple[bytes, bytes, int]]) -> int:
        """Entries kept by an earlier run, each to its owner; waits until all are in."""
        by_shard: list[list] = [[] for _ in self.shards]
        for item in items:
            by_shard[self._owner(item[0])].append(item)
        return sum(self._each("load", by_shard))
