"""What shard tasks run in Ray worker processes (and the progress counter they report
to). Nothing here imports torch, so a worker starts in well under a second and stays
small; the model lives in the model actors only."""

from __future__ import annotations

import os

import ray

from cache.sharded import ShardedCache

from .compressors import REGISTRY
from .config import Compressor, JobConfig, register_secrets
from .output import remove
from .service import NeuralBackend
from .shard import ShardResult, ShardTask, commit_marker, mark_failed, process_shards


class Progress:
    """Counters the shard tasks bump after every batch, and which worker process holds
    which shard; the driver polls them."""

    def __init__(self):
        self.docs = self.bytes = 0
        self.working: dict[str, int] = {}

    def add(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.bytes += nbytes

    def started(self, shard: str, pid: int) -> None:
        self.working[shard] = pid

    def finished(self, shard: str) -> None:
        self.working.pop(shard, None)

    def get(self) -> tuple[int, int]:
        return self.docs, self.bytes

    def in_flight(self) -> dict[str, int]:
        return dict(self.working)


def make_backend(cfg: JobConfig, service=None):
    """The shard worker's compressor: the model actor's, or a CPU-only one from the registry."""
    if cfg.model.compressor is Compressor.NEURAL:
        return NeuralBackend(service, remote=True)
    return REGISTRY[cfg.model.compressor](cfg)


def shard_task(group: list[ShardTask], cfg: JobConfig, service, caches, thresholds, meta, progress) -> list[ShardResult]:
    """Body of one Ray task: a shard, or a group of small shards sharing model calls.
    Input problems come back as failed results (permanent); anything else raises so
    the driver can retry the whole group."""
    register_secrets(cfg)  # this worker's error messages are scrubbed of them too
    backend = make_backend(cfg, service)
    cache = ShardedCache(caches, cfg.cache, invoke=lambda m, a: m.remote(a), wait=ray.get) if caches else None
    report = (lambda d, b: progress.add.remote(d, b)) if progress is not None else None
    for t in group:
        if progress is not None:
            progress.started.remote(t.name, os.getpid())
    def committed(t: ShardTask, r: ShardResult) -> None:
        commit_marker(t, cfg, r, meta)
        remove(t.out(cfg, "_failed"), cfg.storage_options)

    try:
        pairs = process_shards(group, cfg, backend, cache, thresholds, meta, report, committed)
    finally:
        for t in group:
            if progress is not None:
                progress.finished.remote(t.name)
    return [mark_failed(t, cfg, r) if isinstance(r, BaseException) else r for t, r in pairs]
