"""The shard worker's side of the services: the model actor as a compression backend,
and the segment cache shards (plain classes, usable in-process too; `pipeline.actors`
wraps them with `ray.remote`). Nothing here imports torch: shard workers and cache
actors stay light, and only model actors (`pipeline.model_service`) load the model.
"""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa

from cache.local import LocalSegmentCache
from coder import CoderConfig
from compressor_model.records import compress_documents

from .config import CacheConfig


class NeuralBackend:
    """The shard worker's view of a model service (local object or Ray actor)."""

    symbol_type = pa.uint16()

    def __init__(self, service, remote: bool):
        self.service, self.remote = service, remote
        self.info = self._call("info")
        self.namespace = self.info["namespace"]
        self.coder = CoderConfig(**self.info["coder"])

    def _call(self, name, *args):
        if self.remote:
            import ray

            return ray.get(getattr(self.service, name).remote(*args))
        return getattr(self.service, name)(*args)

    def segment(self, docs, thresholds):
        return self._call("segment", docs, thresholds)

    def compress(self, docs, offs, cache):
        return compress_documents(docs, offs, self.namespace, self.coder,
                                  lambda data, off: self._call("encode", data, off), cache)

    def decode(self, windows, seg_off):
        return self._call("decode", windows, seg_off)

    def maxrss(self) -> int:
        return self._call("maxrss")


class CacheService(LocalSegmentCache):
    """One shard of the global segment cache (a Ray actor in a job)."""

    def stats(self) -> dict:
        return {"entries": len(self), "bytes": self.nbytes, "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions, "max_bytes": self.max_bytes}

    def pid(self) -> int:
        return os.getpid()


class ShardedCache:
    """get_many / put_many over several cache shards, keys spread by their first byte.
    Lookups to all shards are issued together; a failed shard is treated as a miss
    (the entry is recomputed), never as an error."""

    def __init__(self, shards: list, cfg: CacheConfig, remote: bool = True):
        self.shards, self.cfg, self.remote = shards, cfg, remote

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
                calls.append((part, self._invoke(s, "get_many", [keys[i] for i in part])))
        for part, call in calls:
            try:
                values = self._result(call)
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
                self._invoke(s, "put_many", part)  # fire and forget when remote
            except Exception:  # noqa: BLE001
                pass

    def _invoke(self, shard: int, method: str, arg):
        target = getattr(self.shards[shard], method)
        return target.remote(arg) if self.remote else target(arg)

    def _result(self, call):
        if self.remote:
            import ray

            return ray.get(call)
        return call


def checkpoint_digest(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest()[:16] if data else "shipped"
