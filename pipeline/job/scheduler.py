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
whole corpus into the same error.

At the tail of a job, when a worker is idle and nothing waits to start, the longest
running task past run.straggler_factor x the median finished one (and
run.straggler_min_s) gets a duplicate attempt. Outputs are deterministic, and the
Progress actor lets only the first attempt to commit a group write it; the other is
cancelled, or finds the group taken and discards its uncommitted files."""

from __future__ import annotations

import enum
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import ray
import ray.exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..errors import JobError
from ..redact import redact
from ..store.parquet import OutputMeta
from .cluster import Cluster
from .plan import ShardTask
from .progress import Heartbeat, Progress
from .shard import SUPERSEDED, mark_failed, shard_task


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


@dataclass
class Attempt:
    """One launch of a shard task: its group, the retries it has spent, its id (the
    Progress actor's key) and when it started."""

    group: list[ShardTask]
    tries: int
    system: int
    launch: int
    t0: float

    @property
    def key(self) -> str:
        return ",".join(t.name for t in self.group)


def run_shards(cluster: Cluster, groups: list[list[ShardTask]], thresholds, meta: OutputMeta, log=print,
               retries: dict | None = None, drain: Drain | None = None):
    """Yields one ShardResult per shard, keeping shard_workers tasks (a shard, or a
    group of small ones) in flight, retrying failed ones and duplicating stragglers
    (see the module's doc); `retries` counts them by Failure value (and "straggler").
    With a `drain` requested it launches no more and returns once the shards in
    flight are done (or abandoned)."""
    retries = retries if retries is not None else {}
    drain = drain or Drain(0.0)
    cfg = cluster.cfg
    beat = Heartbeat(sum(map(len, groups)), len(cluster.models), log, cfg.run.progress, cfg.run.log_every_s)
    # On the driver's node: the counters (and who may commit what) live as long as the
    # driver does, not as long as some node a spot reclaim can take (a test lost them so).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress = ray.remote(Progress).options(num_cpus=0, name=cluster.name("progress"), scheduling_strategy=here).remote()
    cluster.own(progress)
    task_fn = ray.remote(shard_task).options(num_cpus=cfg.run.shard_cpus, resources=cfg.run.shard_resources, max_retries=0)
    queue = [(g, 0, 0, 0.0) for g in groups]  # (group, task retries, system retries, not before: a backoff)
    finished, failed, took = 0, [], []  # took: seconds of the finished tasks (stragglers are measured by them)
    if cluster.metrics:
        cluster.metrics.start(sum(map(len, groups)))
    inflight: dict = {}  # ref -> Attempt
    n = 0

    def launch(group, tries, system):
        nonlocal n
        model = cluster.models[n % len(cluster.models)] if cluster.models else None
        ref = task_fn.remote(group, cfg, model, cluster.caches, thresholds, meta, progress, n)
        inflight[ref] = Attempt(group, tries, system, n, time.monotonic())
        n += 1

    def running() -> int:
        return sum(len(a.group) for a in {a.key: a for a in inflight.values()}.values())

    while queue or inflight:
        if drain.requested and not inflight:
            break
        if drain.give_up():
            for ref in inflight:
                ray.cancel(ref, force=True)  # uncommitted: no output, no marker
            log(f"drain: abandoned {running()} shard(s) in flight")
            break
        ready = [q for q in queue if q[3] <= time.monotonic()] if not drain.requested else []
        while ready and len(inflight) < cfg.run.shard_workers:
            item = ready.pop(0)
            queue.remove(item)
            launch(*item[:3])
        if not queue and not drain.requested and len(inflight) < cfg.run.shard_workers:
            slow = _straggler(inflight, took, cfg.run.straggler_factor, cfg.run.straggler_min_s)
            if slow is not None:
                retries["straggler"] = retries.get("straggler", 0) + 1
                log(f"{slow.key}: running {time.monotonic() - slow.t0:.0f} s, over run.straggler_factor="
                    f"{cfg.run.straggler_factor:g} x the median shard task: a duplicate attempt started (the first to commit wins)")
                launch(slow.group, slow.tries, slow.system)
        if inflight:
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
        else:  # only retries waiting out their backoff
            done = []
            time.sleep(0.1)
        if cfg.run.stall_timeout_s and inflight:
            stuck = set(ray.get(progress.stalled.remote(cfg.run.stall_timeout_s)))
            for ref, a in list(inflight.items()):
                if a.launch in stuck:
                    log(f"{a.key}: no progress for {cfg.run.stall_timeout_s:g} s: cancelled, to be retried (a system failure)")
                    ray.cancel(ref, force=True)  # ray.get(ref) then raises TaskCancelledError: retried below
                    progress.finished.remote(a.launch)
        docs, nbytes = ray.get(progress.get.remote())
        beat.progress(docs, nbytes, running())
        if cluster.metrics:
            cluster.metrics.progress(docs, nbytes)
        for ref in done:
            a = inflight.pop(ref)
            others = [r for r, b in inflight.items() if b.key == a.key]  # a straggler's other attempt
            try:
                results = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - retried by its class (the module's doc), then failed
                progress.release.remote(a.key, a.launch)
                if others:
                    continue  # the other attempt carries on
                kind = classify(e)
                if kind is Failure.SYSTEM and a.system < cfg.run.max_system_retries:
                    retries[kind.value] = retries.get(kind.value, 0) + 1
                    backoff = min(cfg.run.retry_backoff_s * (a.system + 1), 5 * cfg.run.retry_backoff_s)
                    queue.append((a.group, a.tries, a.system + 1, time.monotonic() + backoff))
                    continue
                if kind is Failure.TASK and a.tries < cfg.run.max_retries:  # later, not holding up the others
                    retries[kind.value] = retries.get(kind.value, 0) + 1
                    backoff = min(cfg.run.retry_backoff_s * (a.tries + 1), 5 * cfg.run.retry_backoff_s)
                    queue.append((a.group, a.tries + 1, a.system, time.monotonic() + backoff))
                    continue
                results = [mark_failed(t, cfg, _root_cause(e), last_frame(e)) for t in a.group]
            if results and results[0].status == SUPERSEDED:  # the other attempt owns the commit
                if not others:  # ... and failed after it took it: run the group again
                    queue.append((a.group, a.tries, a.system, 0.0))
                continue
            for other in others:  # this attempt committed: the other's work goes (it aborts its own writes)
                ray.cancel(other)
                progress.finished.remote(inflight.pop(other).launch)
            took.append(time.monotonic() - a.t0)
            for r in results:
                finished += 1
                if r.status != "done":
                    failed.append(r)
                beat.shard(r, running())
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


def _straggler(inflight: dict, took: list[float], factor: float, min_s: float) -> Attempt | None:
    """The longest-running attempt that has no duplicate yet, when it has run over
    `factor` x the median finished task (and `min_s`); None when there is none."""
    if not factor or not took or not inflight:
        return None
    limit = max(factor * statistics.median(took), min_s)
    keys = Counter(a.key for a in inflight.values())
    now = time.monotonic()
    slow = [a for a in inflight.values() if keys[a.key] == 1 and now - a.t0 > limit]
    return min(slow, key=lambda a: a.t0) if slow else None


def _root_cause(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
