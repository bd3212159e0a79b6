"""One input shard -> one output shard. Backend-agnostic: the same code runs in a Ray
task talking to model and cache actors, or in-process in tests.

Stages are small classes with one `__call__`; `Stage` times them and counts what went
through, and the totals land in the shard's stats file.
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from compressor_model.records import DocRecord

from .config import JobConfig
from .output import OutRow, ShardWriter, join, schema, write_bytes_atomic, write_json_atomic
from .readers import Document, Reject, ShardError, read_shard
from .redact import redact


@dataclass
class ShardTask:
    index: int
    input_url: str
    name: str  # output name (no extension)
    size: int = 0  # bytes on storage, for grouping small shards

    def out(self, cfg: JobConfig, kind: str) -> str:
        ext = {"shards": "parquet", "_rejects": "jsonl"}.get(kind, "json")
        return join(cfg.output, kind, f"{self.name}.{ext}")


@dataclass(kw_only=True)
class Counts:
    """What a shard, and a whole run, adds up."""

    docs_in: int = 0
    docs_out: int = 0
    rejects: int = 0
    bytes_in: int = 0
    symbols_out: int = 0
    segments: int = 0  # segment occurrences
    unique_segments: int = 0  # distinct segments per model call, looked up in the cache
    cache_hits: int = 0
    coded_bytes: int = 0  # bytes the model coded (cache misses)

    def add_counts(self, other: Counts) -> None:
        for f in fields(Counts):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def bytes_per_symbol(self) -> float:
        return self.bytes_in / self.symbols_out if self.symbols_out else 0.0

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.unique_segments if self.unique_segments else 0.0

    @property
    def reused_fraction(self) -> float:
        """Segment occurrences the model did not code: repeats within a call plus cache hits."""
        return 1 - (self.unique_segments - self.cache_hits) / self.segments if self.segments else 0.0


@dataclass
class ShardResult(Counts):
    name: str
    input_url: str
    status: str  # "done" or "failed"
    reason: str = ""
    stage_seconds: dict = field(default_factory=dict)
    parquet: dict = field(default_factory=dict)  # rows, bytes, sha256
    peak_rss_bytes: int = 0  # of the worker process, sampled after every batch
    maxrss_bytes: int = 0  # the worker process's lifetime peak (getrusage), an upper bound
    model_maxrss_bytes: int = 0  # the model actor's lifetime peak, when there is one


class Stage:
    """Base of the pipeline stages: wall time and items per stage."""

    name = "stage"

    def __init__(self, result: ShardResult):
        self.result = result

    def timed(self, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            d = self.result.stage_seconds
            d[self.name] = d.get(self.name, 0.0) + time.perf_counter() - t


class Segment(Stage):
    name = "segment"

    def __init__(self, result, backend, thresholds):
        super().__init__(result)
        self.backend, self.thresholds = backend, thresholds

    def __call__(self, docs: list[bytes]) -> list[np.ndarray]:
        return self.timed(self.backend.segment, docs, self.thresholds)


class Code(Stage):
    """Cache lookups, coding of the misses on the backend, packing."""

    name = "code"

    def __init__(self, result, backend, cache):
        super().__init__(result)
        self.backend, self.cache = backend, cache

    def __call__(self, docs, offs):
        records, st = self.timed(self.backend.compress, docs, offs, self.cache)
        r = self.result
        r.segments += st.segments
        r.unique_segments += st.unique_segments
        r.cache_hits += st.cache_hits
        r.coded_bytes += st.coded_bytes
        return records


class Write(Stage):
    name = "write"

    def __init__(self, result, writer: ShardWriter, store_raw: bool):
        super().__init__(result)
        self.writer, self.store_raw = writer, store_raw

    def __call__(self, docs: list[Document], records) -> None:
        rows = [
            OutRow(
                doc_id=d.id, source=redact(d.shard), source_row=d.row, raw=d.data if self.store_raw else None,
                n_bytes=len(d.data), symbols=r.symbols, seg_offsets=r.seg_off, seg_symbol_offsets=r.sym_off,
                seg_window_offsets=r.win_off, window_bytes=r.window_counts,
            )
            for d, r in zip(docs, records)
        ]
        self.timed(self.writer.write, rows)
        self.result.docs_out += len(rows)
        self.result.symbols_out += sum(len(r.symbols) for r in records)


def _concat_records(recs: list[DocRecord]) -> DocRecord:
    """One record from consecutive slices of a document."""
    def stitched(name):
        parts, base = [np.zeros(1, np.int64)], 0
        for r in recs:
            off = getattr(r, name)
            parts.append(off[1:] + base)
            base += int(off[-1])
        return np.concatenate(parts)

    return DocRecord(
        n_bytes=sum(r.n_bytes for r in recs), seg_off=stitched("seg_off"), win_off=stitched("win_off"),
        window_counts=np.concatenate([r.window_counts for r in recs]), window_codes=np.concatenate([r.window_codes for r in recs]),
        sym_off=stitched("sym_off"), symbols=np.concatenate([r.symbols for r in recs]),
    )


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryBoundExceeded(Exception):
    pass


class ShardJob:
    """One shard's reading, writing and commit; compression may be shared (groups)."""

    def __init__(self, task: ShardTask, cfg: JobConfig, backend, cache, thresholds, meta: dict):
        self.task, self.cfg, self.backend = task, cfg, backend
        self.res = ShardResult(task.name, task.input_url, "done")
        self.writer = ShardWriter(task.out(cfg, "shards"), schema(backend.symbol_type),
                                  {**meta, "source": redact(task.input_url)}, cfg.output_format.compression,
                                  cfg.storage_options, tmp_dir=join(cfg.output, "_tmp"),
                                  row_group_rows=cfg.output_format.row_group_docs)
        self.segment, self.code = Segment(self.res, backend, thresholds), Code(self.res, backend, cache)
        self.write = Write(self.res, self.writer, cfg.output_format.store_raw)
        self.rejects: list[Reject] = []
        self.t0 = time.perf_counter()

    def documents(self):
        """The shard's non-empty documents; rejects are kept with their reasons."""
        for item in read_shard(self.task.input_url, self.cfg.reader, self.cfg.storage_options):
            self.res.docs_in += 1
            if isinstance(item, Reject):
                self.rejects.append(item)
            elif not item.data:
                self.rejects.append(Reject(item.shard, item.row, item.id, "empty document"))
            else:
                self.res.bytes_in += len(item.data)
                yield item

    def compress(self, datas: list[bytes]) -> list[DocRecord]:
        # Documents over doc_slice_bytes go through the model a slice at a time (each
        # slice starts a segment), which bounds the memory a single document can take.
        n = self.cfg.run.doc_slice_bytes
        out: list = [None] * len(datas)
        small = [i for i, d in enumerate(datas) if len(d) <= n]
        if small:
            part = [datas[i] for i in small]
            for i, r in zip(small, self.code(part, self.segment(part))):
                out[i] = r
        for i, d in enumerate(datas):
            if out[i] is None:
                out[i] = _concat_records([self.code([p], self.segment([p]))[0] for p in (d[k : k + n] for k in range(0, len(d), n))])
        return out

    def add(self, docs: list[Document], records: list[DocRecord]) -> None:
        for r in records:  # codes were only needed to make the symbols
            r.window_codes = r.window_codes[:0]
        self.write(docs, records)
        rss = rss_bytes()
        self.res.peak_rss_bytes = max(self.res.peak_rss_bytes, rss)
        bound = self.cfg.run.worker_memory_bytes
        if rss > bound:
            raise MemoryBoundExceeded(
                f"{redact(self.task.input_url)}: worker memory {rss / 2**20:.0f} MiB exceeds run.worker_memory_bytes "
                f"({bound / 2**20:.0f} MiB) after row {docs[-1].row}; lower run.batch_bytes or run.doc_slice_bytes, "
                "or raise the bound"
            )

    def finish(self) -> ShardResult:
        res = self.res
        res.stage_seconds["total"] = time.perf_counter() - self.t0
        res.maxrss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        res.model_maxrss_bytes = getattr(self.backend, "maxrss", lambda: 0)()
        res.rejects = len(self.rejects)
        lines = b"".join(
            (json.dumps({"source": redact(r.shard), "row": r.row, "id": r.id, "reason": redact(r.reason)}) + "\n").encode()
            for r in self.rejects
        )
        res.parquet = self.writer.commit()
        write_bytes_atomic(self.task.out(self.cfg, "_rejects"), lines, self.cfg.storage_options)
        return res

    def abort(self) -> None:
        self.writer.abort()


def _batches(items, max_bytes: int, size=lambda d: len(d.data)):
    batch, total = [], 0
    for x in items:
        batch.append(x)
        total += size(x)
        if total >= max_bytes:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def process_shard(task: ShardTask, cfg: JobConfig, backend, cache, thresholds, meta: dict, progress=None) -> ShardResult:
    """Read, compress and commit one shard, streaming. Raises ShardError for unreadable
    input (the caller records the shard as failed); output appears only when everything
    worked."""
    job = ShardJob(task, cfg, backend, cache, thresholds, meta)
    try:
        for batch in _batches(job.documents(), cfg.run.batch_bytes):
            job.add(batch, job.compress([d.data for d in batch]))
            if progress is not None:
                progress(len(batch), sum(len(d.data) for d in batch))
    except BaseException:
        job.abort()
        raise
    return job.finish()


def process_group(tasks: list[ShardTask], cfg: JobConfig, backend, cache, thresholds, meta: dict,
                  progress=None) -> list[tuple[ShardTask, ShardResult | BaseException]]:
    """Several small shards in one task: each is read and committed on its own, but
    their documents share model calls, so a tiny shard does not pay for a whole batch
    of fixed-shape model work. Outputs do not depend on the grouping (model calls are
    batch-invariant). Returns each shard's result, or the input error that failed it."""
    out: list = []
    jobs: list[tuple[ShardJob, list[Document]]] = []
    for t in tasks:
        job = ShardJob(t, cfg, backend, cache, thresholds, meta)
        try:
            jobs.append((job, list(job.documents())))
        except (ShardError, MemoryBoundExceeded) as e:
            job.abort()
            out.append((t, e))
    if not jobs:
        return out
    pending = list(range(len(jobs)))
    try:
        owned = [(k, d) for k, (_, docs) in enumerate(jobs) for d in docs]
        group = jobs[0][0]  # its stages time and count the shared model calls
        records: list[DocRecord] = []
        for batch in _batches(owned, cfg.run.batch_bytes, size=lambda kd: len(kd[1].data)):
            records += group.compress([d.data for _, d in batch])
            if progress is not None:
                progress(len(batch), sum(len(d.data) for _, d in batch))
        # Per-call counts of distinct segments (the hit rate's numerator and denominator)
        # cannot be attributed to one shard exactly: split them by segment share.
        shared = {k: getattr(group.res, k) for k in ("unique_segments", "cache_hits", "coded_bytes")}
        seconds = {k: group.res.stage_seconds.get(k, 0.0) for k in ("segment", "code")}
        total_segs = sum(len(r.seg_off) - 1 for r in records) or 1
        for k, (job, docs) in enumerate(jobs):
            mine = [r for (j, _), r in zip(owned, records) if j == k]
            share = sum(len(r.seg_off) - 1 for r in mine) / total_segs
            job.res.segments = sum(len(r.seg_off) - 1 for r in mine)
            for key, v in shared.items():  # per-call counts, split by segment share
                setattr(job.res, key, round(v * share))
            job.res.stage_seconds.update({key: v * share for key, v in seconds.items()})
            if docs:
                job.add(docs, mine)
            out.append((job.task, job.finish()))
            pending.remove(k)
    except BaseException:
        for k in pending:
            jobs[k][0].abort()
        raise
    return out


def commit_marker(task: ShardTask, cfg: JobConfig, res: ShardResult, meta: dict) -> None:
    """Stats, then the completion marker (last: it is what makes the shard done)."""
    write_json_atomic(task.out(cfg, "_stats"), asdict(res), cfg.storage_options)
    marker = {
        "name": task.name, "input": redact(task.input_url), "rows": res.docs_out, "rejects": res.rejects,
        "docs_in": res.docs_in, "bytes_in": res.bytes_in, "symbols_out": res.symbols_out,
        "parquet": res.parquet, "namespace": meta.get("namespace"), "fingerprint": meta.get("fingerprint"),
    }
    write_json_atomic(task.out(cfg, "_done"), marker, cfg.storage_options)


def mark_failed(task: ShardTask, cfg: JobConfig, err: BaseException) -> ShardResult:
    if isinstance(err, (ShardError, MemoryBoundExceeded)):
        reason = str(err)
    else:
        reason = f"{task.input_url}: {type(err).__name__}: {err}"
    reason = redact(reason)
    try:
        write_json_atomic(task.out(cfg, "_failed"), {"name": task.name, "input": redact(task.input_url), "reason": reason},
                          cfg.storage_options)
    except Exception as e:  # noqa: BLE001 - the output store itself may be what failed
        reason += f" (and the failure could not be recorded in the output: {redact(type(e).__name__ + ': ' + str(e))})"
    return ShardResult(task.name, task.input_url, "failed", reason=reason)
