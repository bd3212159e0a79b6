"""The Ray job as one straight line (`run_job`): plan, check, start the cluster,
thresholds, warm cache, run the shards, keep the cache, manifest, summary.

    driver ── lists input shards, skips those with a completion marker, calibrates or
       │      loads thresholds, writes config.yaml          (plan.py, calibration.py)
       │      keeps <= shard_workers tasks in flight         (scheduler.py)
       ├── ModelService actors (GPU, or CPU): segmentation + windowed coding  (cluster.py)
       ├── CacheShard actors: the global segment cache, keys spread by hash
       └── shard tasks (CPU): read -> segment (actor) -> cache lookups -> code misses
           (actor) -> pack -> Parquet -> commit -> marker   (shard.py, stages.py)

docs/architecture.md explains the choices (Ray core rather than Ray Data, where the
coder runs, backpressure, retries, commits).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import fsspec

from compressor_model.config import SegmenterKind, Thresholds
from compressor_model.engine import checkpoint_fingerprint
from compressor_model.numerics import resolve
from compressor_model.records import Counts

from ..backends.model_actor import read_checkpoint
from ..backends.registry import make_backend
from ..config import JobConfig, check_job, dump_config, settings_key
from ..errors import Drained, Interrupted, JobError
from ..redact import redact
from ..store.files import exists, read_json, remove, remove_tree, write_bytes_atomic, write_json_atomic
from ..store.layout import Marker, OutputLayout
from ..store.lease import LeaseKeeper
from ..store.markers import LedgerRefresher, MarkerIndex
from .calibration import calibrate
from .cluster import Cluster, start_cluster
from .plan import changed_inputs, check_mixing, continue_in_made_precision, group_small, plan_tasks, select, write_manifest
from .scheduler import Drain, run_shards
from .stages import ShardResult
from .warm import load_warm, save_warm


@dataclass
class Summary(Counts):
    output: str
    shards_total: int = 0
    shards_done: int = 0
    shards_skipped: int = 0
    shards_failed: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0  # until the actors were ready
    model_actors: int = 0  # their seg_time, code_time and model_time are summed in
    run_id: str = ""  # the `run` tag of this run's metrics, and in its actors' names
    model_machines: list = field(default_factory=list)  # device and kind of the model actors (int8: may differ)
    failed: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)  # the thresholds and their sample, when the run used them
    cache_loaded: dict = field(default_factory=dict)  # entries an earlier run kept (pipeline.warm)
    cache_kept: dict = field(default_factory=dict)  # ... and those this run kept for the next
    nothing_to_do: bool = False  # every shard was done, with these settings: nothing was started
    retries: dict = field(default_factory=dict)  # shard tasks retried, by failure class (job.scheduler.Failure); "straggler": duplicates
    drained: bool = False  # stopped by SIGTERM: shards_left were not run (resubmit to continue)
    shards_left: int = 0

    @property
    def model_busy_fraction(self) -> float:
        """How much of the actors' time after startup went into model work: well under 1
        means the model actors (the GPUs) wait on shard workers, storage or the cache."""
        span = self.model_actors * (self.wall_s - self.startup_s)
        return (self.seg_time + self.code_time) / span if span > 0 else 0.0

    def add_shard(self, r: ShardResult) -> None:
        if r.status == "done":
            self.shards_done += 1
            self.add(r)
        else:
            self.shards_failed += 1
            self.failed[r.name] = r.reason

    def to_dict(self) -> dict:
        d = {**asdict(self), "output": redact(self.output)}
        d = {"output": d.pop("output"), **d}  # output first: scripts find the line by it
        d.update(bytes_per_symbol=self.bytes_per_symbol, cache_hit_rate=self.cache_hit_rate, reused_fraction=self.reused_fraction,
                 bytes_per_s=self.bytes_in / self.wall_s if self.wall_s else 0.0,
                 model_busy_fraction=self.model_busy_fraction)
        return d

    def text(self) -> str:
        if self.nothing_to_do:
            return (f"nothing to do: all {self.shards_total} shard(s) are done, made with these settings "
                    f"(--force redoes them all, --shards NAME reruns some)\noutput: {redact(self.output)}/shards/*.parquet")
        lines = [
            f"shards: {self.shards_done} done, {self.shards_skipped} skipped (already done), {self.shards_failed} failed, of {self.shards_total}",
            f"documents: {self.docs_in} in = {self.docs_out} compressed + {self.rejects} rejected",
            f"bytes in: {self.bytes_in:,}   symbols out: {self.symbols_out:,}   rate: {self.bytes_per_symbol:.3f} bytes/symbol",
            f"segment cache hit rate: {self.cache_hit_rate:.1%} ({self.cache_hits:,} of {self.unique_segments:,} distinct segments per batch); "
            f"{self.reused_fraction:.1%} of all {self.segments:,} segments reused, not coded",
            f"throughput: {self.bytes_in / max(self.wall_s, 1e-9) / 1e3:,.1f} KB/s over {self.wall_s:.1f} s",
            *([f"model actors: {self.model_actors}, busy {self.model_busy_fraction:.0%} of the time after startup "
               f"({self.model_time:.1f} s in forward passes) on {', '.join(self.model_machines) or '?'}"]
              if self.model_actors else []),
            f"output: {redact(self.output)}/shards/*.parquet",
        ]
        if self.calibration:
            c = self.calibration
            lines.insert(-1, f"thresholds: entropy > {c['theta_abs']:.3f} or rise > {c['theta_jump']:.3f} bits, the "
                             f"{c['percentile']:g}th percentiles of {c['sample_bytes']:,} bytes from {c['sample_docs']:,} "
                             f"documents in {c['sample_shards']} shard(s), {c['sample_seconds']:.1f} s")
        if self.retries:
            lines.insert(-1, "retries: " + ", ".join(f"{n} duplicate attempt(s) of a straggler" if k == "straggler" else
                                                     f"{n} after a {k} failure" for k, n in sorted(self.retries.items())))
        for name, reason in self.failed.items():
            lines.append(f"FAILED {name}: {reason}")
        return "\n".join(lines)


def run_job(cfg: JobConfig, shards: list[str] | None = None, force: bool = False, log=print,
            keep_stale: bool = False) -> Summary:
    """Run the shards of `cfg.input` that are not done (with `shards`: the named ones;
    with `force`: all of them), and the done ones whose input changed since (unless
    `keep_stale`). Everything that can be refused is refused before a cluster starts;
    a run with nothing to do starts none. Ctrl-C raises Interrupted with what was
    finished."""
    check_job(cfg)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        # The output's markers are listed while the input is listed and the model read.
        listing = pool.submit(_list_output, cfg)
        tasks = plan_tasks(cfg)
        selected = select(tasks, shards) if shards else tasks
        fingerprint = model_fingerprint(cfg)
        index = listing.result()
    if not force or shards:  # a run that redoes every shard makes them in what it is told
        made = continue_in_made_precision(index, cfg, tasks, log)
        fingerprint, cfg = (fingerprint if made is cfg else model_fingerprint(made)), made
    settings = settings_key(cfg, fingerprint)
    redo = {t.name for t in selected} if (force or shards) else set()
    changed = [] if keep_stale else changed_inputs(selected, index.markers(Marker.DONE, [t.name for t in selected
                                                                                         if t.name in index.done]))
    if changed:
        log(f"{len(changed)} done shard(s) have changed input since their output was made (size, ETag or mtime): "
            f"redone ({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}); --keep-stale keeps them")
    redo |= set(changed)
    todo = [t for t in selected if t.name in redo or t.name not in index.done]
    stale = check_mixing(index, cfg, "settings", settings, tasks, redo, bool(shards)) + changed
    summary = Summary(cfg.output, shards_total=len(selected), shards_skipped=len(selected) - len(todo))
    if not todo and not _needs_model_check(index, cfg, tasks):
        index.save()  # the markers read for the check: the next pass (status, verify) reuses them
        summary.nothing_to_do = True
        summary.wall_s = summary.startup_s = time.perf_counter() - t0
        return summary
    running = {t.name for t in todo}
    others = sum(1 for t in tasks if t.name in index.done and t.name not in running)
    lease = LeaseKeeper(cfg.output, cfg.storage_options, os.urandom(4).hex())
    lease.acquire()  # one driver per output: refused here, before anything starts, when another holds it
    try:
        ctx = start_cluster(cfg, lease.lease.run_id)
    except BaseException:
        lease.release()
        raise
    drain = Drain(cfg.run.drain_grace_s)
    restore = sigterm_drains(drain, log)  # from here on (after ray.init's handlers) a SIGTERM drains the run
    layout = OutputLayout(cfg.output)
    summary.run_id, summary.model_machines = ctx.run_id, ctx.machines
    summary.startup_s = time.perf_counter() - t0
    try:
        meta = ctx.meta.with_(settings=settings)
        stale += check_mixing(index, cfg, "namespace", meta.namespace, tasks, redo, bool(shards))
        if not todo:
            summary.nothing_to_do = True
            summary.wall_s = time.perf_counter() - t0
            return summary
        remove_tree(layout.tmp, cfg.storage_options)  # what killed runs left half-written (one job per output)
        for name in sorted(set(stale)):  # redone now; until then they are not done
            remove(layout.marker(Marker.DONE, name), cfg.storage_options)
        index.save()  # markers read for the checks; the manifest and the next pass reuse them
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        config = dump_config(cfg).encode()  # this run's settings; config.yaml: the latest run's
        write_bytes_atomic(layout.run_config(stamp, summary.run_id), config, cfg.storage_options)
        write_bytes_atomic(layout.config, config, cfg.storage_options)
        thresholds = load_or_calibrate(cfg, ctx, tasks, log, redo_all=force and not shards)
        if thresholds:
            summary.calibration = {**asdict(thresholds), "sample_shards": len(thresholds.sample_shards)}
        meta = meta.with_(thresholds=thresholds.provenance_free() if thresholds else None)
        log(f"{len(todo)} shard(s) to run" + (f" (named by --shards); {others} other shard(s) of the input are done"
                                               if shards else f", {summary.shards_skipped} already done"))
        groups = group_small(todo, cfg.run.small_shard_bytes, cfg.run.group_bytes, cfg.run.shard_workers)
        cache = ctx.cache_client()
        if cache:
            summary.cache_loaded = load_warm(cfg, meta.namespace, cache, log)
        ledger = LedgerRefresher(index, cfg.run.log_every_s).start()  # `status` while it runs: seconds
        try:
            for res in run_shards(ctx, groups, thresholds, meta, log, summary.retries, drain):
                summary.add_shard(res)
        finally:
            ledger.stop()
        summary.drained = drain.requested
        summary.shards_left = len(todo) - summary.shards_done - summary.shards_failed
        if cache and cfg.cache.keep_bytes:
            summary.cache_kept = save_warm(cfg, meta.namespace, cache, log)
        write_manifest(cfg, tasks, index, {t.name for t in todo})
        summary.add(ctx.calibration_counts)
        summary.model_actors = len(ctx.models)
        summary.wall_s = time.perf_counter() - t0
        write_json_atomic(layout.run_summary(stamp, summary.run_id), summary.to_dict(),
                          cfg.storage_options)  # what `proxycomp report` shows of each run
        if summary.drained:
            raise Drained(summary)
    except KeyboardInterrupt:
        ctx.shutdown()  # no task writes after this: count what is committed
        summary.wall_s = time.perf_counter() - t0
        summary.shards_done = len(running & MarkerIndex(cfg.output, cfg.storage_options).done)
        raise Interrupted(summary) from None
    finally:
        ctx.shutdown()
        restore()
        lease.release()
    return summary


def sigterm_drains(drain: Drain, log):
    """SIGTERM (a preemption notice, a RayJob deleted) drains the run instead of killing
    it; a second one abandons what is in flight. Only in the main thread, where Python
    delivers signals (a run in another thread keeps the process's handler). Returns
    what puts the previous handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_term(signum, frame):
        again = drain.requested
        drain.request()
        log("SIGTERM again: abandoning the shards in flight" if again else
            f"SIGTERM: draining: no new shards; those in flight get up to {drain.grace_s:g} s to commit")

    previous = signal.signal(signal.SIGTERM, on_term)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _list_output(cfg: JobConfig) -> MarkerIndex:
    """The output's markers; an output URL that names a file is refused here, before
    anything is started."""
    fs, path = fsspec.core.url_to_fs(cfg.output, **cfg.storage_options)
    if fs.isfile(path):
        raise JobError(f"--output {redact(cfg.output)} is a file; give a directory (or an object-store prefix)")
    return MarkerIndex(cfg.output, cfg.storage_options)


def model_fingerprint(cfg: JobConfig) -> str:
    """The fingerprint of the model the run would load, read here (no model actor)."""
    if not cfg.model.compressor.needs_model:
        return make_backend(cfg).info.fingerprint
    try:
        return checkpoint_fingerprint(read_checkpoint(cfg.model.checkpoint, cfg.storage_options), cfg.engine.precision)
    except Exception as e:  # noqa: BLE001 - any storage or format error; reported scrubbed
        text = str(e)
        refused = re.search(r"WeightsUnpickler error: ([^.\n]*)", text)
        why = (f"not a plain weights file (torch.load with weights_only=True refused it: {refused.group(1)})" if refused
               else f"{type(e).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}")
        raise JobError(f"cannot read the checkpoint {redact(cfg.model.checkpoint)}: {redact(why)}") from None


def _needs_model_check(index: MarkerIndex, cfg: JobConfig, tasks) -> bool:
    """Whether the done shards' settings alone cannot tell that this run would make what
    they hold: markers of older versions carry no settings key, and a float precision
    (bf16 and fp32 share the model's fingerprint) may not be the one they were made in."""
    markers = index.markers(Marker.DONE, [t.name for t in tasks if t.name in index.done])
    wanted = resolve(cfg.engine.precision).value
    return any(m.get("settings") is None or m.get("precision") not in (None, wanted) for m in markers.values())


def load_or_calibrate(cfg: JobConfig, ctx: Cluster, tasks, log, redo_all: bool = False):
    """The output's thresholds, or new ones. Thresholds of another model (or of the same
    model in other numerics: int8 and float entropies differ) are refused, unless this
    run redoes every shard: then it calibrates anew."""
    if cfg.segment.kind is not SegmenterKind.ENTROPY or not cfg.model.compressor.needs_model:
        return None
    url = OutputLayout(cfg.output).thresholds
    if exists(url, cfg.storage_options):
        th = Thresholds(**read_json(url, cfg.storage_options))
        if th.fingerprint == ctx.info.fingerprint:
            return th
        if not redo_all:
            raise JobError(f"{redact(url)} was calibrated for model {th.fingerprint}, not {ctx.info.fingerprint} "
                           "(another checkpoint or precision); --force redoes the output with new thresholds")
        log(f"{redact(url)} was calibrated for model {th.fingerprint}; this run redoes every shard, so it calibrates anew")
    log("calibrating segmentation thresholds on a sample of the input")
    th = calibrate(ctx, tasks)
    log(f"calibrated on {th.sample_bytes:,} bytes of {th.sample_docs:,} documents from {len(th.sample_shards)} shard(s) "
        f"in {th.sample_seconds:.1f} s")
    write_json_atomic(url, asdict(th), cfg.storage_options)
    return th


def calibrate_job(cfg: JobConfig, log=print):
    """`proxycomp calibrate`: (re)compute and store the thresholds."""
    check_job(cfg)
    tasks = plan_tasks(cfg)
    lease = LeaseKeeper(cfg.output, cfg.storage_options, os.urandom(4).hex())
    lease.acquire()  # new thresholds under a running job would mix two segmentations in one output
    try:
        ctx = start_cluster(cfg, lease.lease.run_id)
        try:
            th = calibrate(ctx, tasks)
        finally:
            ctx.shutdown()
        write_json_atomic(OutputLayout(cfg.output).thresholds, asdict(th), cfg.storage_options)
    finally:
        lease.release()
    return th


