"""Starting the job's actors and driving shard tasks through them."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict

from coder import FORMAT_VERSION

from .compressors import REGISTRY
from .config import Compressor, JobConfig, content_config, register_secrets
from .redact import redact
from .service import CacheService, ModelService, NeuralBackend, ShardedCache
from .shard import ShardResult, ShardTask, commit_marker, mark_failed, process_shard


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
    from .job import remove
    from .readers import ShardError
    from .shard import MemoryBoundExceeded, process_group

    register_secrets(cfg)  # this worker's error messages are scrubbed of them too
    backend = make_backend(cfg, service)
    cache = ShardedCache(caches, cfg.cache) if caches else None
    report = (lambda d, b: progress.add.remote(d, b)) if progress is not None else None
    for t in group:
        if progress is not None:
            progress.started.remote(t.name, os.getpid())
    try:
        if len(group) == 1 and group[0].size >= cfg.run.small_shard_bytes:
            try:
                pairs = [(group[0], process_shard(group[0], cfg, backend, cache, thresholds, meta, report))]
            except (ShardError, MemoryBoundExceeded) as e:
                pairs = [(group[0], e)]
        else:
            pairs = process_group(group, cfg, backend, cache, thresholds, meta, report)
    finally:
        for t in group:
            if progress is not None:
                progress.finished.remote(t.name)
    results = []
    for t, r in pairs:
        if isinstance(r, BaseException):
            results.append(mark_failed(t, cfg, r))
        else:
            commit_marker(t, cfg, r, meta)
            remove(t.out(cfg, "_failed"), cfg.storage_options)
            results.append(r)
    return results


class ActorContext:
    def __init__(self, cfg: JobConfig, started_ray: bool):
        import ray

        from .job import default_torch_threads

        self.cfg, self.started_ray = cfg, started_ray
        self.models, self.caches = [], []
        # Named, so that an operator (or a fault-injection test) can find them.
        self.run_id = os.urandom(4).hex()
        self._check_resources()
        self.progress = ray.remote(Progress).options(num_cpus=0, name=self._name("progress")).remote()
        if cfg.model.compressor is not Compressor.NEURAL:  # CPU-only compressors run in the shard tasks
            info = make_backend(cfg).info
        else:
            Model = ray.remote(ModelService)
            threads = default_torch_threads(cfg)
            # Actors read the checkpoint themselves (any fsspec URL every node can reach), so
            # a restarted actor needs nothing from the driver.
            self.models = [
                Model.options(name=self._name(f"model-{i}"), num_cpus=cfg.run.cpus_per_actor,
                              num_gpus=cfg.run.gpus_per_actor, max_restarts=-1, max_task_retries=0).remote(cfg, threads)
                for i in range(cfg.run.model_actors)
            ]
            if cfg.cache.enabled:
                Cache = ray.remote(CacheService)
                self.caches = [Cache.options(name=self._name(f"cache-{i}"), num_cpus=0, max_restarts=-1)
                               .remote(cfg.cache.max_bytes_per_shard) for i in range(cfg.cache.shards)]
            try:
                info = ray.get(self.models[0].info.remote())
            except ray.exceptions.RayError as e:
                from .job import JobError

                self.shutdown()
                raise JobError(f"the model actor could not start: {_creation_error(e)}") from None
        self.meta = {
            **info,
            "coder_format_version": FORMAT_VERSION,
            "config": _redacted(content_config(cfg)),
        }
        self.task_fn = ray.remote(shard_task).options(num_cpus=cfg.run.shard_cpus, max_retries=0)

    def _name(self, what: str) -> str:
        return f"proxycomp-{self.run_id}-{what}"

    def _check_resources(self):
        """Fail fast, not hang, when the model actors leave no CPU for a shard task."""
        import ray

        from .job import JobError

        r = self.cfg.run
        if self.cfg.model.compressor is not Compressor.NEURAL:
            return
        need = r.model_actors * r.cpus_per_actor + r.shard_cpus
        have = ray.cluster_resources().get("CPU", 0.0)
        gpus = ray.cluster_resources().get("GPU", 0.0)
        if need > have or r.model_actors * r.gpus_per_actor > gpus:
            msg = (f"this Ray cluster has {have:g} CPUs and {gpus:g} GPUs; {r.model_actors} model actor(s) x "
                   f"{r.cpus_per_actor:g} CPU / {r.gpus_per_actor:g} GPU plus one shard task ({r.shard_cpus:g} CPU) "
                   "do not fit: lower run.model_actors, run.cpus_per_actor or run.shard_cpus")
            if self.started_ray:  # a cluster of our own will not grow
                self.shutdown()
                raise JobError(msg)
            print(f"[proxycomp] warning: {msg} (waiting in case the cluster scales up)", file=sys.stderr)

    def calibrate(self, docs):
        import ray

        return ray.get(self.models[0].calibrate.remote(docs))

    def run_shards(self, groups: list[list[ShardTask]], thresholds, meta):
        """Yields one ShardResult per shard, keeping shard_workers tasks (a shard, or a
        group of small ones) in flight and retrying a task whose worker, actor or
        storage failed (up to max_retries)."""
        import ray
        from tqdm import tqdm

        cfg = self.cfg
        show = cfg.run.progress
        bars = [
            tqdm(total=sum(map(len, groups)), desc="shards", unit="shard", disable=not show, file=sys.stderr, position=0),
            tqdm(desc="docs", unit="doc", disable=not show, file=sys.stderr, position=1),
            tqdm(desc="bytes", unit="B", unit_scale=True, disable=not show, file=sys.stderr, position=2),
        ]
        queue = [(g, 0) for g in groups]
        inflight: dict = {}
        n = 0
        last = (0, 0)
        while queue or inflight:
            while queue and len(inflight) < cfg.run.shard_workers:
                task, attempt = queue.pop(0)
                model = self.models[n % len(self.models)] if self.models else None
                n += 1
                ref = self.task_fn.remote(task, cfg, model, self.caches, thresholds, meta, self.progress)
                inflight[ref] = (task, attempt)
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            docs, nbytes = ray.get(self.progress.get.remote())
            bars[1].update(docs - last[0])
            bars[2].update(nbytes - last[1])
            last = (docs, nbytes)
            for ref in done:
                group, attempt = inflight.pop(ref)
                try:
                    results = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - worker/actor/storage failure: retry, then fail
                    if attempt < cfg.run.max_retries:
                        queue.append((group, attempt + 1))
                        time.sleep(min(2.0 * (attempt + 1), 10.0))
                        continue
                    results = [mark_failed(t, cfg, _root_cause(e)) for t in group]
                bars[0].update(len(results))
                yield from results
        for b in bars:
            b.close()

    def model_seconds(self) -> dict:
        """Seconds the model actors spent on segmentation, on coding, and inside forward
        passes (summed over actors; an actor that restarted reports only its new life)."""
        import ray

        out = {"seg_s": 0.0, "code_s": 0.0, "forward_s": 0.0}
        for a in self.models:
            try:
                st = ray.get(a.stats.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - statistics only; never fail a finished job over them
                continue
            out["seg_s"] += st["seg_time"]
            out["code_s"] += st["code_time"]
            out["forward_s"] += st["model_time"]
        return out

    def shutdown(self):
        import ray

        for a in self.models + self.caches + [getattr(self, "progress", None)]:
            if a is None:
                continue
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        if self.started_ray:
            ray.shutdown()


def _creation_error(e: BaseException) -> str:
    """The last line of the actor's traceback: the actual error, not Ray's wrapping."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return redact(lines[-1] if lines else type(e).__name__)


def _root_cause(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def _redacted(d):
    if isinstance(d, dict):
        return {k: ("***" if k == "storage_options" and v else _redacted(v)) for k, v in d.items()}
    return redact(d) if isinstance(d, str) else d


def init_local_ray(**kwargs) -> None:
    """Start a single-machine Ray cluster whose servers all listen on 127.0.0.1.

    On Linux Ray gives its servers the machine's external address even when asked for
    127.0.0.1, unless it runs in its single-machine mode; that mode is switched on for
    this process (the constant) and for the processes Ray starts (the environment)."""
    import ray
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(address="local", include_dashboard=False, **kwargs)


def start_actors(cfg: JobConfig) -> ActorContext:
    import ray

    register_secrets(cfg)
    started = False
    if not ray.is_initialized():
        address = cfg.run.address or os.environ.get("RAY_ADDRESS") or "local"
        if address == "local":
            init_local_ray(logging_level="WARNING", log_to_driver=True)
        else:
            ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        started = True
    return ActorContext(cfg, started)
