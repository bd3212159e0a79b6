"""Keeping shard tasks in flight: at most run.shard_workers at a time, each sent to the
next model actor in turn, a failed task retried after a backoff (worker, actor or
storage failures; up to run.max_retries), and progress (bars on a terminal, Ray
metrics) from the counters the tasks bump."""

from __future__ import annotations

import sys
import time

import ray
from tqdm import tqdm

from ..store.parquet import OutputMeta
from .cluster import Cluster
from .plan import ShardTask
from .shard import mark_failed, shard_task


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


def run_shards(cluster: Cluster, groups: list[list[ShardTask]], thresholds, meta: OutputMeta):
    """Yields one ShardResult per shard, keeping shard_workers tasks (a shard, or a
    group of small ones) in flight and retrying a task whose worker, actor or
    storage failed (up to max_retries)."""
    cfg = cluster.cfg
    show = cfg.run.progress
    bars = [
        tqdm(total=sum(map(len, groups)), desc="shards", unit="shard", disable=not show, file=sys.stderr, position=0),
        tqdm(desc="docs", unit="doc", disable=not show, file=sys.stderr, position=1),
        tqdm(desc="bytes", unit="B", unit_scale=True, disable=not show, file=sys.stderr, position=2),
    ]
    progress = ray.remote(Progress).options(num_cpus=0, name=cluster.name("progress")).remote()
    cluster.own(progress)
    task_fn = ray.remote(shard_task).options(num_cpus=cfg.run.shard_cpus, resources=cfg.run.shard_resources, max_retries=0)
    queue = [(g, 0, 0.0) for g in groups]  # (group, attempt, not before: a retry waits out its backoff)
    if cluster.metrics:
        cluster.metrics.start(sum(map(len, groups)))
    inflight: dict = {}
    n = 0
    last = (0, 0)
    while queue or inflight:
        ready = [q for q in queue if q[2] <= time.monotonic()]
        while ready and len(inflight) < cfg.run.shard_workers:
            item = ready.pop(0)
            queue.remove(item)
            task, attempt, _ = item
            model = cluster.models[n % len(cluster.models)] if cluster.models else None
            n += 1
            ref = task_fn.remote(task, cfg, model, cluster.caches, thresholds, meta, progress)
            inflight[ref] = (task, attempt)
        if inflight:
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
        else:  # only retries waiting out their backoff
            done = []
            time.sleep(0.1)
        docs, nbytes = ray.get(progress.get.remote())
        bars[1].update(docs - last[0])
        bars[2].update(nbytes - last[1])
        last = (docs, nbytes)
        if cluster.metrics:
            cluster.metrics.progress(docs, nbytes)
        for ref in done:
            group, attempt = inflight.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - worker/actor/storage failure: retry, then fail
                if attempt < cfg.run.max_retries:  # later, without holding up the other shards
                    backoff = min(cfg.run.retry_backoff_s * (attempt + 1), 5 * cfg.run.retry_backoff_s)
                    queue.append((group, attempt + 1, time.monotonic() + backoff))
                    continue
                results = [mark_failed(t, cfg, _root_cause(e)) for t in group]
            bars[0].update(len(results))
            for r in results:
                if cluster.metrics:
                    cluster.metrics.shard(r)
                yield r
    for b in bars:
        b.close()


def _root_cause(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
