"""The Ray job: list shards, start the actors, run shard tasks, commit, summarise.

    driver ── lists input shards, skips those with a completion marker, calibrates or
       │      loads thresholds, writes config.yaml, keeps <= shard_workers tasks in flight
       ├── ModelService actors (GPU, or CPU): segmentation + windowed coding
       ├── CacheShard actors: the global segment cache, keys spread by hash
       └── shard tasks (CPU): read -> segment (actor) -> cache lookups -> code misses
           (actor) -> pack -> Parquet -> commit -> marker

docs/architecture.md explains the choices (Ray core rather than Ray Data, where the
coder runs, backpressure, retries, commits).
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import asdict, dataclass, field

import fsspec

from compressor_model.config import SegmenterKind, Thresholds
from compressor_model.records import Counts
from compressor_model.corpus import SHARD_SUFFIXES, Document, ShardError, list_shards, read_shard

from .actors import start_actors
from .config import JobConfig, dump_config
from .errors import JobError
from .markers import MarkerIndex
from .output import exists, join, read_json, write_bytes_atomic, write_json_atomic
from .redact import redact
from .shard import ShardResult, ShardTask


def shard_name(input_root: str, url: str) -> str:
    """Deterministic output name from the input shard's path under the input root."""
    root = input_root.rstrip("/")
    rel = url[len(root) :].lstrip("/") if url.startswith(root) and url != root else url.rsplit("/", 1)[-1]
    for suf in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if rel.lower().endswith(suf):
            rel = rel[: -len(suf)]
            break
    return rel.replace("/", "__")


def plan_tasks(cfg: JobConfig) -> list[ShardTask]:
    try:
        urls = list_shards(cfg.input, cfg.storage_options, sizes=True)
    except Exception as e:  # noqa: BLE001 - any storage backend error; report it scrubbed
        raise JobError(f"cannot list input {redact(cfg.input)}: {redact(type(e).__name__ + ': ' + str(e))}") from None
    if not urls:
        raise JobError(f"no input shards (.jsonl, .jsonl.zst, .parquet) under {redact(cfg.input)}")
    tasks = [ShardTask(i, u, shard_name(cfg.input, u), n) for i, (u, n) in enumerate(urls)]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise JobError("two input shards map to the same output name; rename one")
    return tasks


def group_small(tasks: list[ShardTask], small_bytes: int, group_bytes: int, parallel: int = 1) -> list[list[ShardTask]]:
    """Shards under small_bytes (on storage) travel together in listing order, up to
    group_bytes per group; every other shard is a group of its own. Groups are made
    small enough that there are at least `parallel` of them when the small shards
    allow it, so grouping never leaves shard workers idle."""
    small = sum(t.size for t in tasks if t.size < small_bytes)
    group_bytes = min(group_bytes, max(1, -(-small // max(1, parallel))))
    groups: list[list[ShardTask]] = []
    current: list[ShardTask] = []
    size = 0
    for t in tasks:
        if t.size >= small_bytes:
            groups.append([t])
            continue
        if current and size + t.size > group_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += t.size
    if current:
        groups.append(current)
    return groups


def select(tasks: list[ShardTask], patterns: list[str]) -> list[ShardTask]:
    """Tasks whose output name or input file name matches one of the patterns (globs)."""
    out = [t for t in tasks if any(fnmatch.fnmatch(t.name, p) or fnmatch.fnmatch(t.input_url.rsplit("/", 1)[-1], p)
                                   for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(t.name, p) or fnmatch.fnmatch(t.input_url.rsplit("/", 1)[-1], p)
                                              for t in tasks)]
    if unknown:
        raise JobError(f"--shards: no shard matches {unknown}; known: {[t.name for t in tasks][:20]}")
    return out


def sample_docs(tasks: list[ShardTask], cfg: JobConfig, max_bytes: int) -> list[bytes]:
    """A deterministic calibration sample: documents in shard and row order."""
    out, total = [], 0
    for t in tasks:
        try:
            for item in read_shard(t.input_url, cfg.reader, cfg.storage_options):
                if isinstance(item, Document) and item.data:
                    out.append(item.data[: max_bytes - total])
                    total += len(out[-1])
                    if total >= max_bytes:
                        return out
        except ShardError:
            continue  # a bad shard is not a calibration source; the run reports it
    return out


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
    failed: dict = field(default_factory=dict)

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
        d = {"output": self.output, **asdict(self)}  # output first: scripts find the line by it
        d.update(bytes_per_symbol=self.bytes_per_symbol, cache_hit_rate=self.cache_hit_rate, reused_fraction=self.reused_fraction,
                 bytes_per_s=self.bytes_in / self.wall_s if self.wall_s else 0.0,
                 model_busy_fraction=self.model_busy_fraction)
        return d

    def text(self) -> str:
        lines = [
            f"shards: {self.shards_done} done, {self.shards_skipped} skipped (already done), {self.shards_failed} failed, of {self.shards_total}",
            f"documents: {self.docs_in} in = {self.docs_out} compressed + {self.rejects} rejected",
            f"bytes in: {self.bytes_in:,}   symbols out: {self.symbols_out:,}   rate: {self.bytes_per_symbol:.3f} bytes/symbol",
            f"segment cache hit rate: {self.cache_hit_rate:.1%} ({self.cache_hits:,} of {self.unique_segments:,} distinct segments per batch); "
            f"{self.reused_fraction:.1%} of all {self.segments:,} segments reused, not coded",
            f"throughput: {self.bytes_in / max(self.wall_s, 1e-9) / 1e3:,.1f} KB/s over {self.wall_s:.1f} s",
            *([f"model actors: {self.model_actors}, busy {self.model_busy_fraction:.0%} of the time after startup "
               f"({self.model_time:.1f} s in forward passes)"] if self.model_actors else []),
            f"output: {redact(self.output)}/shards/*.parquet",
        ]
        for name, reason in self.failed.items():
            lines.append(f"FAILED {name}: {reason}")
        return "\n".join(lines)


def _check_output(index: MarkerIndex, cfg: JobConfig, namespace: str, tasks: list[ShardTask], force: bool) -> None:
    """Refuse to mix outputs of different compressors in one output directory."""
    markers = index.markers("_done", [t.name for t in tasks])
    stale = [name for name, m in markers.items() if m.get("namespace") != namespace]
    if stale and not force:
        raise JobError(
            f"{len(stale)} shard(s) in {redact(cfg.output)} were made by a different compressor or settings "
            f"(e.g. {stale[:3]}); use another --output, or --force to redo them"
        )


def run_job(cfg: JobConfig, shards: list[str] | None = None, force: bool = False, log=print) -> Summary:
    if not cfg.input or not cfg.output:
        raise JobError("both --input and --output are required")
    t0 = time.perf_counter()
    tasks = plan_tasks(cfg)
    selected = select(tasks, shards) if shards else tasks
    summary = Summary(cfg.output, shards_total=len(selected))

    ctx = start_actors(cfg)
    summary.startup_s = time.perf_counter() - t0
    try:
        clear_tmp(cfg)
        meta = ctx.meta
        index = MarkerIndex(cfg.output, cfg.storage_options)
        _check_output(index, cfg, meta["namespace"], selected, force or bool(shards))
        write_bytes_atomic(join(cfg.output, "config.yaml"), dump_config(cfg).encode(), cfg.storage_options)
        thresholds = load_or_calibrate(cfg, ctx, tasks, log)
        meta = {**meta, "thresholds": asdict(thresholds) if thresholds else None}

        todo = []
        for t in selected:
            if not (force or shards) and t.name in index.done:
                summary.shards_skipped += 1
            else:
                todo.append(t)
        log(f"{len(todo)} shard(s) to run, {summary.shards_skipped} already done")
        groups = group_small(todo, cfg.run.small_shard_bytes, cfg.run.group_bytes, cfg.run.shard_workers)
        for res in ctx.run_shards(groups, thresholds, meta):
            summary.add_shard(res)
        write_manifest(cfg, tasks, index, {t.name for t in todo})
        summary.wall_s = time.perf_counter() - t0
        summary.add(ctx.model_counts())
        summary.model_actors = len(ctx.models)
    finally:
        ctx.shutdown()
    return summary


def clear_tmp(cfg: JobConfig) -> None:
    """Remove what killed runs left half-written in <output>/_tmp (one job per output)."""
    fs, path = fsspec.core.url_to_fs(join(cfg.output, "_tmp"), **cfg.storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def load_or_calibrate(cfg: JobConfig, ctx, tasks, log):
    if cfg.segment.kind is not SegmenterKind.ENTROPY or ctx.meta["compressor"] != "neural":
        return None
    url = join(cfg.output, "thresholds.json")
    if exists(url, cfg.storage_options):
        th = Thresholds(**read_json(url, cfg.storage_options))
        if th.fingerprint != ctx.meta["fingerprint"]:
            raise JobError(f"{redact(url)} was calibrated for model {th.fingerprint}, not {ctx.meta['fingerprint']}")
        return th
    log("calibrating segmentation thresholds on a sample of the input")
    th = ctx.calibrate(sample_docs(tasks, cfg, cfg.run.calibration_bytes))
    write_json_atomic(url, asdict(th), cfg.storage_options)
    return th


def calibrate_job(cfg: JobConfig, log=print):
    """`proxycomp calibrate`: (re)compute and store the thresholds."""
    tasks = plan_tasks(cfg)
    ctx = start_actors(cfg)
    try:
        th = ctx.calibrate(sample_docs(tasks, cfg, cfg.run.calibration_bytes))
    finally:
        ctx.shutdown()
    write_json_atomic(join(cfg.output, "thresholds.json"), asdict(th), cfg.storage_options)
    return th


def shard_status(cfg: JobConfig) -> dict:
    """Done / failed / pending per input shard, from the markers (the source of truth)."""
    tasks = plan_tasks(cfg)
    index = MarkerIndex(cfg.output, cfg.storage_options)
    names = [t.name for t in tasks]
    done = index.markers("_done", [n for n in names if n in index.done])
    failed = index.markers("_failed", [n for n in names if n in index.failed])
    totals = {k: sum(m.get(k, 0) for m in done.values()) for k in ("rows", "rejects", "bytes_in", "symbols_out")}
    out = {"done": [n for n in names if n in done],
           "failed": {n: failed[n].get("reason", "") for n in names if n in failed},
           "pending": [n for n in names if n not in done and n not in failed]}
    out["counts"] = {"total": len(tasks), "done": len(out["done"]), "failed": len(out["failed"]), "pending": len(out["pending"])}
    out["totals"] = totals
    return out


def write_manifest(cfg: JobConfig, tasks: list[ShardTask], seen: MarkerIndex | None = None,
                   ran: set[str] = frozenset()) -> dict:
    """manifest.json: every input shard's state. The listing is taken afresh (this run
    added markers); markers read earlier in the run (`seen`) are not fetched again,
    except those of the shards that ran since."""
    index = MarkerIndex(cfg.output, cfg.storage_options)
    if seen is not None:
        index.keep(seen, ran)
    names = [t.name for t in tasks]
    done = index.markers("_done", [n for n in names if n in index.done])
    failed = index.markers("_failed", [n for n in names if n in index.failed])
    shards = {}
    for t in tasks:
        if t.name in done:
            m = done[t.name]
            shards[t.name] = {"status": "done", **{k: m[k] for k in ("input", "rows", "rejects", "docs_in", "bytes_in", "symbols_out", "parquet")}}
        elif t.name in failed:
            shards[t.name] = {"status": "failed", **failed[t.name]}
        else:
            shards[t.name] = {"status": "pending", "input": redact(t.input_url)}
    manifest = {"schema_version": 1, "input": redact(cfg.input), "shards": shards}
    write_json_atomic(join(cfg.output, "manifest.json"), manifest, cfg.storage_options)
    return manifest
