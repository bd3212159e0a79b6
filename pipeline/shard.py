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
from dataclasses import asdict, dataclass, field

import fsspec
import numpy as np

from coder import stitch_offsets
from compressor_model.corpus import Document, Reject, ShardError, read_shard
from compressor_model.records import Counts, DocRecord

from .compressors import Backend
from .config import JobConfig
from .output import OutRow, ShardWriter, join, remove, schema, write_bytes_atomic, write_json_atomic
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
        offs, counts = self.timed(self.backend.segment, docs, self.thresholds)
        self.result.add(counts)
        return offs


class Code(Stage):
    """Cache lookups, coding of the misses on the backend, packing."""

    name = "code"

    def __init__(self, result, backend, cache):
        super().__init__(result)
        self.backend, self.cache = backend, cache

    def __call__(self, docs, offs):
        records, counts = self.timed(self.backend.compress, docs, offs, self.cache)
        self.result.add(counts)
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
        self.result.windows += sum(len(r.window_counts) for r in records)


def _concat_records(recs: list[DocRecord]) -> DocRecord:
    """One record from consecutive slices of a document."""
    def stitched(name):
        return stitch_offsets(getattr(r, name) for r in recs)

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


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to weights that add up to total (largest remainder)."""
    w = sum(weights)
    if not w:
        return [total] + [0] * (len(weights) - 1) if weights else []
    exact = [total * x / w for x in weights]
    out = [int(e) for e in exact]
    for k in sorted(range(len(weights)), key=lambda k: out[k] - exact[k])[: total - sum(out)]:
        out[k] += 1
    return out


class Compress:
    """Segmentation and coding of a batch of documents, whoever's they are. Documents
    over run.doc_slice_bytes go through the model a slice at a time (each slice starts
    a segment), which bounds the memory a single document can take."""

    # Counted per model call, so split over the shards in it: integers exactly (they add
    # up to the call's), seconds in proportion. The per-document counts (documents,
    # bytes, symbols, windows, segments) come exact from reading and writing.
    SHARED = ("unique_segments", "cache_hits", "coded_bytes", "seg_positions", "code_positions", "code_padded_positions")
    SHARED_SECONDS = ("seg_time", "code_time", "model_time")

    def __init__(self, cfg: JobConfig, backend: Backend, cache, thresholds):
        self.slice = cfg.run.doc_slice_bytes
        self.tally = ShardResult("", "", "done")
        self.segment, self.code = Segment(self.tally, backend, thresholds), Code(self.tally, backend, cache)

    def __call__(self, datas: list[bytes]) -> list[DocRecord]:
        n = self.slice
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

    def credit(self, results: list[ShardResult], segments: list[int]) -> None:
        """Split what the calls since the last credit counted over the shards whose
        documents were in them, by their share of the segments (exact for one shard)."""
        for key in self.SHARED:
            for r, v in zip(results, _apportion(getattr(self.tally, key), segments)):
                setattr(r, key, getattr(r, key) + v)
        total = sum(segments)
        share = [k / total for k in segments] if total else [1.0] + [0.0] * (len(segments) - 1)
        for key in self.SHARED_SECONDS:
            for r, w in zip(results, share):
                setattr(r, key, getattr(r, key) + getattr(self.tally, key) * w)
        for stage, sec in self.tally.stage_seconds.items():
            for r, w in zip(results, share):
                r.stage_seconds[stage] = r.stage_seconds.get(stage, 0.0) + sec * w
        for r, k in zip(results, segments):
            r.segments += k
        self.tally = ShardResult("", "", "done")
        self.segment.result = self.code.result = self.tally


class ShardJob:
    """One shard's reading, writing and commit; its documents' compression may share
    model calls with other shards' (small shards travel together)."""

    def __init__(self, task: ShardTask, cfg: JobConfig, backend: Backend, meta: dict):
        self.task, self.cfg, self.backend = task, cfg, backend
        self.res = ShardResult(task.name, task.input_url, "done")
        self.writer = ShardWriter(task.out(cfg, "shards"), schema(backend.symbol_type),
                                  {**meta, "source": redact(task.input_url)}, cfg.output_format.compression,
                                  cfg.storage_options, tmp_dir=join(cfg.output, "_tmp"),
                                  row_group_rows=cfg.output_format.row_group_docs)
        self.write = Write(self.res, self.writer, cfg.output_format.store_raw)
        self.rejects: list[Reject] = []
        self.error: BaseException | None = None  # what failed this shard (input or memory bound)
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

    def fail(self, err: BaseException) -> None:
        self.error = err
        self.writer.abort()

    def finish(self) -> ShardResult:
        """Close and publish the Parquet (the last row group, the checksum, the upload)
        and the rejects: timed as the `commit` stage."""
        res = self.res
        t = time.perf_counter()
        res.maxrss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        res.model_maxrss_bytes = self.backend.maxrss()
        res.rejects = len(self.rejects)
        lines = b"".join(
            (json.dumps({"source": redact(r.shard), "row": r.row, "id": r.id, "reason": redact(r.reason)}) + "\n").encode()
            for r in self.rejects
        )
        res.parquet = self.writer.commit()
        write_bytes_atomic(self.task.out(self.cfg, "_rejects"), lines, self.cfg.storage_options)
        res.stage_seconds["commit"] = time.perf_counter() - t
        res.stage_seconds["total"] = time.perf_counter() - self.t0
        return res


def process_shards(tasks: list[ShardTask], cfg: JobConfig, backend: Backend, cache, thresholds, meta: dict,
                   progress=None, committed=None) -> list[tuple[ShardTask, ShardResult | BaseException]]:
    """Read, compress and commit shards, streaming: one shard, or several small ones whose
    documents share model calls so that a tiny shard does not pay for a whole batch of
    fixed-shape model work. Each shard is read, written and committed on its own, and its
    output does not depend on the company it kept (model calls are batch-invariant).

    Returns each shard's result, or the input error (ShardError) or MemoryBoundExceeded
    that failed it; output appears only for shards where everything worked. Anything
    else raises, with every unfinished shard's output discarded, for the caller to retry.
    `committed(task, result)` is called as soon as a shard's output is in place (the
    caller writes its marker then, not after the whole group).
    """
    compress = Compress(cfg, backend, cache, thresholds)
    jobs: list[ShardJob] = []
    batch: list[tuple[ShardJob, Document]] = []
    read_all: list[ShardJob] = []  # read to the end, waiting for their last batch
    out: dict[int, ShardResult | BaseException] = {}
    pending = 0  # bytes in the batch

    def flush():
        nonlocal pending
        live = [(j, d) for j, d in batch if j.error is None]
        batch.clear()
        pending = 0
        if not live:
            return
        records = compress([d.data for _, d in live])
        owners = list(dict.fromkeys(j for j, _ in live))
        mine = {j: [k for k, (o, _) in enumerate(live) if o is j] for j in owners}
        compress.credit([j.res for j in owners], [sum(len(records[k].seg_off) - 1 for k in mine[j]) for j in owners])
        for j in owners:
            try:
                j.add([live[k][1] for k in mine[j]], [records[k] for k in mine[j]])
            except MemoryBoundExceeded as e:
                j.fail(e)
        if progress is not None:
            progress(len(live), sum(len(d.data) for _, d in live))

    def finish_ready():
        waiting = {id(j) for j, _ in batch}
        for j in list(read_all):
            if id(j) not in waiting:
                read_all.remove(j)
                out[j.task.index] = j.error if j.error is not None else j.finish()
                if committed is not None and j.error is None:
                    committed(j.task, out[j.task.index])

    try:
        for t in tasks:
            job = ShardJob(t, cfg, backend, meta)
            jobs.append(job)
            try:
                for doc in job.documents():
                    batch.append((job, doc))
                    pending += len(doc.data)
                    if pending >= cfg.run.batch_bytes:
                        flush()
                        finish_ready()
                    if job.error is not None:
                        break
            except ShardError as e:
                job.fail(e)
            read_all.append(job)
            finish_ready()
        flush()
        finish_ready()
    except BaseException:
        for j in jobs:
            if j.task.index not in out:
                j.writer.abort()
        raise
    return [(t, out[t.index]) for t in tasks]


def commit_marker(task: ShardTask, cfg: JobConfig, res: ShardResult, meta: dict) -> None:
    """Stats, then the completion marker (last: it is what makes the shard done). The
    Parquet is looked up before the marker is written and again after: a store that lost
    it (restarted empty, a bucket emptied by hand) must not keep a marker for it. The
    second look matters because the marker's upload retries through an outage and can
    land in a store that came back without the Parquet. The error makes the task retry,
    which writes both again."""
    _check_committed(task, cfg, res)
    write_json_atomic(task.out(cfg, "_stats"), asdict(res), cfg.storage_options)
    marker = {
        "name": task.name, "input": redact(task.input_url), "rows": res.docs_out, "rejects": res.rejects,
        "docs_in": res.docs_in, "bytes_in": res.bytes_in, "symbols_out": res.symbols_out,
        "parquet": res.parquet, "namespace": meta.get("namespace"), "fingerprint": meta.get("fingerprint"),
        "settings": meta.get("settings"), "precision": meta.get("precision"),
    }
    done = task.out(cfg, "_done")
    write_json_atomic(done, marker, cfg.storage_options)
    try:
        _check_committed(task, cfg, res)
    except OSError:
        remove(done, cfg.storage_options)
        raise


def _check_committed(task: ShardTask, cfg: JobConfig, res: ShardResult) -> None:
    fs, path = fsspec.core.url_to_fs(task.out(cfg, "shards"), **cfg.storage_options)
    fs.invalidate_cache(path)
    try:
        size = fs.info(path).get("size")
    except FileNotFoundError:
        size = None
    if size != res.parquet.get("bytes"):
        raise OSError(f"{redact(task.out(cfg, 'shards'))}: {size} bytes in the store, {res.parquet.get('bytes')} were written")


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
