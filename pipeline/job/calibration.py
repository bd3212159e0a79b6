"""A calibration sample that stands for the whole input, not for its first shard.

The paper's segmentation thresholds are global percentiles of the corpus. The sample
here is spread by hashing, so it does not depend on listing order:

- up to `calibration.shards` shards, those whose names hash lowest;
- from each, the documents whose (shard, row) hash lowest, up to an equal share of
  `calibration.bytes` (one shard, however odd, weighs at most that share);
- each document cut to `calibration.doc_bytes` (one huge file does not fill a share);
- a shard is read up to `calibration.scan_bytes` of documents (a sample, not a pass);
- the shards are read by parallel tasks, or by the driver when all of them together are
  under `calibration.local_bytes` (starting workers costs more than reading a few MB).

The same `SampleSpec` picks the documents of analyses and of tokenizer training.

The same input and settings give the same sample. Reading the shards is the caller's to
spread (Ray tasks in a job), and so is computing the entropies (every model actor takes
a part): `calibrate` below.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from dataclasses import dataclass, replace

import numpy as np
import ray

from compressor_model.config import Thresholds
from compressor_model.corpus import Document, ShardError, read_shard
from compressor_model.segment import calibrate_thresholds

from compressor_model.corpus import ReaderConfig

from ..config import JobConfig, SampleSpec
from .plan import ShardTask


def _rank(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class SamplePlan:
    shards: list[ShardTask]
    share_bytes: int  # per shard
    doc_bytes: int
    scan_bytes: int

    read_here_bytes: int = 0

    @property
    def read_here(self) -> bool:
        """Small enough to read in the driver rather than in parallel tasks."""
        return sum(min(t.size, self.scan_bytes) for t in self.shards) <= self.read_here_bytes

    @classmethod
    def of(cls, tasks: list[ShardTask], spec: SampleSpec) -> SamplePlan:
        chosen = sorted(tasks, key=lambda t: _rank("shard", t.name))[: max(1, spec.shards)]
        chosen.sort(key=lambda t: t.index)
        share = max(1, spec.bytes // max(1, len(chosen)))
        return cls(chosen, share, max(1, min(spec.doc_bytes, share)), max(share, spec.scan_bytes), spec.local_bytes)


def sample_shard(task: ShardTask, reader: ReaderConfig, storage_options: dict, share_bytes: int, doc_bytes: int,
                 scan_bytes: int) -> list[bytes]:
    """The shard's documents with the lowest (shard, row) hashes, up to share_bytes, in
    row order. An unreadable shard gives none (the run itself reports it)."""
    keep: list[tuple[int, int, bytes]] = []  # max-heap by rank: (-rank, row, data)
    kept = scanned = 0
    try:
        for item in read_shard(task.input_url, reader, storage_options):
            if not isinstance(item, Document) or not item.data:
                continue
            data = item.data[:doc_bytes]
            heapq.heappush(keep, (-_rank(task.name, item.row), item.row, data))
            kept += len(data)
            while kept > share_bytes and len(keep) > 1:
                kept -= len(heapq.heappop(keep)[2])
            scanned += len(item.data)
            if scanned >= scan_bytes:
                break
    except ShardError:
        return []
    return [data for _, _, data in sorted(keep, key=lambda k: k[1])]


def deal(docs: list[bytes], n: int) -> list[list[bytes]]:
    """Split a sample over n model actors (document i to actor i mod n)."""
    return [docs[i::n] for i in range(n)]


def undeal(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    n = len(parts)
    out: list[np.ndarray] = [None] * sum(map(len, parts))  # type: ignore[list-item]
    for k, part in enumerate(parts):
        out[k::n] = part
    return out


def thresholds(plan: SamplePlan, parts: list[list[bytes]], hs: list[np.ndarray], percentile: float,
               fingerprint: str, started: float) -> Thresholds:
    """The percentiles of the sample's entropies, with where the sample came from."""
    th = calibrate_thresholds(hs, percentile, fingerprint)
    shards = tuple(t.name for t, docs in zip(plan.shards, parts) if docs)
    return replace(th, sample_shards=shards, sample_seconds=round(time.perf_counter() - started, 3))


def sample_in_process(tasks: list[ShardTask], spec: SampleSpec, reader: ReaderConfig = ReaderConfig(),
                      storage_options: dict | None = None) -> tuple[SamplePlan, list[bytes], list[list[bytes]]]:
    """The sample, read in this process: (plan, documents, documents per chosen shard)."""
    plan = SamplePlan.of(tasks, spec)
    parts = [sample_shard(t, reader, storage_options or {}, plan.share_bytes, plan.doc_bytes, plan.scan_bytes)
             for t in plan.shards]
    return plan, [d for p in parts for d in p], parts


def calibrate_in_process(tasks: list[ShardTask], cfg: JobConfig, entropies, fingerprint: str) -> Thresholds:
    """The same calibration in one process (tests, tools): entropies(docs) -> arrays."""
    t0 = time.perf_counter()
    plan, docs, parts = sample_in_process(tasks, cfg.calibration, cfg.reader, cfg.storage_options)
    return thresholds(plan, parts, entropies(docs), cfg.segment.percentile, fingerprint, t0)


def calibrate(cluster, tasks: list[ShardTask]) -> Thresholds:
    """Thresholds from a sample spread over the input: the chosen shards are read by
    parallel tasks (or here, when they are few), every model actor of the cluster
    computes the entropies of a part of the sample."""
    t0 = time.perf_counter()
    cfg = cluster.cfg
    plan = SamplePlan.of(tasks, cfg.calibration)
    args = (cfg.reader, cfg.storage_options, plan.share_bytes, plan.doc_bytes, plan.scan_bytes)
    if plan.read_here:  # a few MB: reading them here beats starting worker processes
        parts = [sample_shard(t, *args) for t in plan.shards]
    else:
        read = ray.remote(sample_shard).options(num_cpus=cfg.run.shard_cpus, resources=cfg.run.shard_resources,
                                                max_retries=cfg.run.max_retries)
        parts = ray.get([read.remote(t, *args) for t in plan.shards])
    docs = deal([d for p in parts for d in p], len(cluster.models))
    results = ray.get([m.entropies.remote(d) for m, d in zip(cluster.models, docs)])
    for _, counted in results:
        cluster.calibration_counts.add(counted)
    hs = undeal([h for h, _ in results])
    return thresholds(plan, parts, hs, cfg.segment.percentile, cluster.info.fingerprint, t0)
