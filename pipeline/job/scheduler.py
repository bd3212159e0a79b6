"""Keeping shard tasks in flight: at most run.shard_workers at a time, each sent to the
next model actor in turn, and progress (bars on a terminal, a heartbeat line in logs,
Ray metrics) from the counters the tasks bump.

A failed task is retried after a backoff, by what failed:

* `Failure.SYSTEM`: the cluster lost something (a worker process or an actor died, a
  node went away, an object was lost, a worker was killed for memory). Nothing is
  wrong with the shard: retried up to run.max_system_retries, apart from its own budget.
* `Failure.TASK`: our code, the shard's input or the storage raised. Spends
  run.max_retries; then the shard is failed, with the error and where it was raised.

When most finished shards fail (run.max_failed_fraction, after run.min_failed_to_stop
of them) the job stops early with the most common reason, instead of walking the
whole corpus into the same error."""

from __future__ import annotations

import enum
import re
import time
from collections import Counter

import ray
import ray.exceptions as rex

from ..errors import JobError
from ..redact import redact
from ..store.parquet import OutputMeta
from .cluster import Cluster
from .plan import ShardTask
from .progress import Heartbeat, Progress
from .shard import mark_failed, shard_task


class Failure(enum.Enum):
    SYSTEM = "system"
    TASK = "task"


SYSTEM_ERRORS = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError,
                 rex.OutOfMemoryError, rex.LocalRayletDiedError, rex.RaySystemError, rex.TaskCancelledError)


def classify(e: BaseException) -> Failure:
    """SYSTEM when e, or what it wraps (a shard task's ray.get of a dead actor), is the
    cluster losing something."""
    seen: set[int] = set()
    while isinstance(e, BaseException) and id(e) not in seen:
        if isinstance(e, SYSTEM_ERRORS):
            return Failure.SYSTEM
        seen.add(id(e))
        e = getattr(e, "cause", None) or e.__cause__
    return Failure.TASK


def last_frame(e: BaseException) -> str:
    """file:line in function of the innermost frame a task's traceback names."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', str(e))
    if not frames:
        return ""
    path, line, fn = frames[-1]
    return f"{'/'.join(path.split('/')[-3:])}:{line} in {fn}"


def _common_reason(failed: list) -> tuple[int, str]:
    """How many failed shards share the most common reason (their own URL left out)."""
    reasons = Counter(r.reason.replace(r.input_url, "<shard>") for r in failed)
    reason, n = reasons.most_common(1)[0]
    return n, reason


class Drain:
    """A stop asked for from outside (SIGTERM: a preemption notice, a deleted RayJob):
    no new shard starts; those in flight get `grace_s` to commit; then, or at a second
    request, they are abandoned (uncommitted work leaves no output and no marker)."""

    def __init__(self, grace_s: float, clock=time.monotonic):
        self.grace_s, self.clock = grace_s, clock
        self.since: float | None = None
        self.abandon = False

    def request(self) -> None:
        if self.since is None:
            self.since = self.clock()
        else:
            self.abandon = True

    @property
    def requested(self) -> bool:
        return self.since is not None

    def give_up(self) -> bool:
        return self.requested and (self.abandon or self.clock() - self.since >= self.grace_s)


def run_shards(cluster: Cluster, groups: list[list[ShardTask]], thresholds, meta: OutputMeta, log=print,
               retries: dict | None = None, drain: Drain | None = None):
    """Yields one ShardResult per shard, keeping shard_workers tasks (a shard, or a
    group of small ones) in flight and retrying failed ones (see the module's doc);
    `retries` counts them by Failure value. With a `drain` requested it launches no
    more and returns once the shards in flight are done (or abandoned)."""
    retries = retries if retries is not None else {}
    drain = drain or Drain(0.0)
    cfg = cluster.cfg
    beat = Heartbeat(sum(map(len, groups)), len(cluster.models), log, cfg.run.progress, cfg.run.log_every_s)
    progress = ray.remote(Progress).options(num_cpus=0, name=cluster.name("progress")).remote()
    cluster.own(progress)
    task_fn = ray.remote(shard_task).options(num_cpus=cfg.run.shard_cpus, resources=cfg.run.shard_resources, max_retries=0)
    # (group, task retries, system retries, not before: a retry waits out its backoff)
    queue = [(g, 0, 0, 0.0) for g in groups]
    finished, failed = 0, []
    if cluster.metrics:
        cluster.metrics.start(sum(map(len, groups)))
    inflight: dict = {}
    n = 0
    while queue or inflight:
        if drain.requested and not inflight:
            break
        if drain.give_up():
            for ref in inflight:
                ray.cancel(ref, force=True)  # uncommitted: no output, no marker
            log(f"drain: abandoned {sum(len(v[0]) for v in inflight.values())} shard(s) in flight")
            break
        ready = [q for q in queue if q[3] <= time.monotonic()] if not drain.requested else []
        while ready and len(inflight) < cfg.run.shard_workers:
            item = ready.pop(0)
            queue.remove(item)
            task, attempt, system, _ = item
            model = cluster.models[n % len(cluster.models)] if cluster.models else None
            n += 1
            ref = task_fn.remote(task, cfg, model, cluster.caches, thresholds, meta, progress)
            inflight[ref] = (task, attempt, system)
        if inflight:
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
        else:  # only retries waiting out their backoff
            done = []
            time.sleep(0.1)
        if cfg.run.stall_timeout_s and inflight:
            stuck = set(ray.get(progress.stalled.remote(cfg.run.stall_timeout_s)))
            for ref, (group, *_rest) in list(inflight.items()):
                if stuck & {t.name for t in group}:
                    log(f"{', '.join(sorted(stuck & {t.name for t in group}))}: no progress for "
                        f"{cfg.run.stall_timeout_s:g} s: cancelled, to be retried (a system failure)")
                    ray.cancel(ref, force=True)  # ray.get(ref) then raises TaskCancelledError: retried below
                    for t in group:
                        progress.finished.remote(t.name)
        docs, nbytes = ray.get(progress.get.remote())
        beat.progress(docs, nbytes, sum(len(v[0]) for v in inflight.values()))
        if cluster.metrics:
            cluster.metrics.progress(docs, nbytes)
        for ref in done:
            group, attempt, system = inflight.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - retried by its class (the module's doc), then failed
                kind = classify(e)
                if kind is Failure.SYSTEM and system < cfg.run.max_system_retries:
                    retries[kind.value] = retries.get(kind.value, 0) + 1
                    backoff = min(cfg.run.retry_backoff_s * (system + 1), 5 * cfg.run.retry_backoff_s)
                    queue.append((group, attempt, system + 1, time.monotonic() + backoff))
                    continue
                if kind is Failure.TASK and attempt < cfg.run.max_retries:  # later, not holding up the others
                    retries[kind.value] = retries.get(kind.value, 0) + 1
                    backoff = min(cfg.run.retry_backoff_s * (attempt + 1), 5 * cfg.run.retry_backoff_s)
                    queue.append((group, attempt + 1, system, time.monotonic() + backoff))
                    continue
                results = [mark_failed(t, cfg, _root_cause(e), last_frame(e)) for t in group]
            for r in results:
                finished += 1
                if r.status != "done":
                    failed.append(r)
                beat.shard(r, sum(len(v[0]) for v in inflight.values()))
                if cluster.metrics:
                    cluster.metrics.shard(r)
                yield r
            stop = cfg.run.min_failed_to_stop
            if stop and len(failed) >= stop and len(failed) >= cfg.run.max_failed_fraction * finished:
                for other in inflight:
                    ray.cancel(other, force=True)  # their outputs are uncommitted: nothing of them remains
                beat.close()
                same, reason = _common_reason(failed)
                raise JobError(f"stopped early: {len(failed)} of {finished} finished shards failed (over "
                               f"run.max_failed_fraction={cfg.run.max_failed_fraction:g} after "
                               f"run.min_failed_to_stop={stop}); {same} of them with: {redact(reason)}. Finished shards "
                               "stay done: fix the cause and run the same command again")
    beat.close()


def _root_cause(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
