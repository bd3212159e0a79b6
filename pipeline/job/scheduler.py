"""Keeping shard tasks in flight: at most run.shard_workers at a time, each sent to the
next model actor in turn, a failed task retried after a backoff (worker, actor or
storage failures; up to run.max_retries), and progress (bars on a terminal, a
heartbeat line in logs, Ray metrics) from the counters the tasks bump."""

from __future__ import annotations

import time

import ray

from ..store.parquet import OutputMeta
from .cluster import Cluster
from .plan import ShardTask
from .progress import Heartbeat, Progress
from .shard import mark_failed, shard_task


def run_shards(cluster: Cluster, groups: list[list[ShardTask]], thresholds, meta: OutputMeta, log=print):
    """Yields one ShardResult per shard, keeping shard_workers tasks (a shard, or a
    group of small ones) in flight and retrying a task whose worker, actor or
    storage failed (up to max_retries)."""
    cfg = cluster.cfg
    beat = Heartbeat(sum(map(len, groups)), len(cluster.models), log, cfg.run.progress, cfg.run.log_every_s)
    progress = ray.remote(Progress).options(num_cpus=0, name=cluster.name("progress")).remote()
    cluster.own(progress)
    task_fn = ray.remote(shard_task).options(num_cpus=cfg.run.shard_cpus, resources=cfg.run.shard_resources, max_retries=0)
    queue = [(g, 0, 0.0) for g in groups]  # (group, attempt, not before: a retry waits out its backoff)
    if cluster.metrics:
        cluster.metrics.start(sum(map(len, groups)))
    inflight: dict = {}
    n = 0
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
        beat.progress(docs, nbytes, sum(len(g) for g, _ in inflight.values()))
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
            for r in results:
                beat.shard(r, sum(len(g) for g, _ in inflight.values()))
                if cluster.metrics:
                    cluster.metrics.shard(r)
                yield r
    beat.close()


def _root_cause(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
