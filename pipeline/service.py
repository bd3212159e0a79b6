"""What runs inside Ray actors: the model service and the segment cache shards.

Both are plain classes (usable in-process too); `pipeline.job` wraps them with
`ray.remote`. The model service does only model work (segmentation and the windowed
coding loop, whose coder kernel runs in the same process because every window's
probabilities depend on where the previous window ended); shard workers do the rest.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import torch

from cache.local import LocalSegmentCache
from coder import CoderConfig, Windows
from compressor_model.engine import NeuralCompressor, compress_documents
from compressor_model.segment import Thresholds

from .config import CacheConfig, JobConfig


class ModelService:
    def __init__(self, cfg: JobConfig, torch_threads: int = 0):
        from .config import register_secrets

        register_secrets(cfg)
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.comp = NeuralCompressor.load(read_checkpoint(cfg.model.checkpoint, cfg.storage_options),
                                          cfg.engine, cfg.segment)

    def info(self) -> dict:
        c = self.comp
        return {
            "compressor": "neural",
            "fingerprint": c.fingerprint,
            "namespace": c.namespace,
            "numerics": c.numerics,
            "coder": {"window_bits": c.cfg.window_bits, "symbol_bits": c.cfg.symbol_bits,
                      "max_window_bytes": c.cfg.max_window_bytes},
            "n_symbols": 1 << c.cfg.symbol_bits,
            "training": c.training_info,
            "device": str(c.device),
        }

    def calibrate(self, docs: list[bytes]) -> Thresholds:
        return self.comp.calibrate(docs)

    def segment(self, docs: list[bytes], thresholds: Thresholds | None) -> list[np.ndarray]:
        return self.comp.segment(docs, thresholds)

    def encode(self, data: np.ndarray, seg_off: np.ndarray) -> Windows:
        return self.comp.encode_segments(data, seg_off)

    def decode(self, windows: Windows, seg_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.comp.decode_segments(windows, seg_off)

    def stats(self) -> dict:
        return vars(self.comp.stats)

    def pid(self) -> int:
        return os.getpid()

    def maxrss(self) -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def read_checkpoint(url: str, storage_options: dict | None = None) -> bytes | None:
    """Checkpoint bytes from any fsspec URL (None: the shipped checkpoint)."""
    if not url:
        return None
    import fsspec

    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        return f.read()


def checkpoint_digest(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest()[:16] if data else "shipped"
