"""The cache's configuration (nested into the job config as `cache`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    shards: int = 2  # cache actors; keys are spread over them by hash
    max_bytes_per_shard: int = 512 << 20  # LRU eviction beyond this
    batch: int = 4096  # keys per lookup call
    keep_bytes: int = 64 << 20  # the hottest entries kept at the end of a run for the next one (0: none)
    warm_from: str = ""  # a folder of kept entries to start from ("": the output's own _cache/)
