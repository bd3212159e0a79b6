"""A shard task: input shards in, committed output shards out. Backend-agnostic: the same
code runs in a Ray task talking to model and cache actors, or in-process in tests.

    shard_task (the Ray task body)
      -> process_shards: read each shard, batch documents (small shards share batches),
         Compress (stages.py) -> ShardJob.add -> Write -> ShardJob.finish (Parquet, rejects)
      -> commit_marker (stats, then the _done marker, last)
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict

import fsspec
import ray

from cache.sharded import ShardedCache
from compressor_model.corpus import Document, Reject, ShardError, read_shard
from compressor_model.records import DocRecord

from ..backends.base import Backend
from ..backends.registry import make_backend
from ..config import JobConfig
from ..errors import InternalError
from ..redact import redact
from ..store.files import remove, write_bytes_atomic, write_json_atomic
from ..store.layout import Marker, OutputLayout
from ..store.parquet import OutputMeta, ShardWriter, schema
from .plan import ShardTask
from .stages import Compress, ShardResult, Write


SUPERSEDED = "superseded"  # a result's status when another attempt of its group committed it


class Superseded(Exception):
    """Another attempt of this group (a straggler's duplicate) committed it first."""


def shard_task(group: list[ShardTask], cfg: JobConfig, service, caches, thresholds, meta: OutputMeta,
               progress, attempt: int = 0) -> list[ShardResult]:
    """Body of one Ray task: a shard, or a group of small shards sharing model calls.
    Input problems come back as failed results (permanent); anything else raises so
    the driver can retry the whole group. `attempt` is this launch's id: it reports
    progress under it and commits only if the Progress actor says the group is its."""
    backend = make_backend(cfg, service)
    cache = ShardedCache(caches, cfg.cache, invoke=lambda m, a: m.remote(a), wait=ray.get) if caches else None
    names = tuple(t.name for t in group)
    report = claim = None
    if progress is not None:
        report = lambda d, b: progress.add.remote(d, b, attempt)  # noqa: E731
        claim = lambda: ray.get(progress.claim.remote(",".join(names), attempt))  # noqa: E731
        progress.started.remote(attempt, names, os.getpid())
    try:
        pairs = process_shards(group, cfg, backend, cache, thresholds, meta, report, commit_marker, claim)
        if claim is not None and not claim():  # every shard failed: the failures are the owner's to record
            raise Superseded()
    except Superseded:
        return [ShardResult(t.name, t.input_url, SUPERSEDED) for t in group]
    finally:
        if progress is not None:
            progress.finished.remote(attempt)
    return [mark_failed(t, cfg, r) if isinstance(r, BaseException) else r for t, r in pairs]


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryBoundExceeded(Exception):
    pass


class ShardJob:
    """One shard's reading, writing and commit; its documents' compression may share
    model calls with other shards' (small shards travel together)."""

    def __init__(self, task: ShardTask, cfg: JobConfig, backend: Backend, meta: OutputMeta):
        self.task, self.cfg, self.backend = task, cfg, backend
        self.layout = layout = OutputLayout(cfg.output)
        self.res = ShardResult(task.name, task.input_url, "done")
        self.writer = ShardWriter(layout.shard(task.name), schema(backend.symbol_type),
                                  meta.with_(source=redact(task.input_url)), cfg.output_format.compression,
                                  cfg.storage_options, tmp_dir=layout.tmp,
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
        if res.docs_in != res.docs_out + res.rejects:
            raise InternalError(f"{redact(self.task.input_url)}: {res.docs_in} documents read, {res.docs_out} written "
                                f"and {res.rejects} rejected")
        lines = b"".join(
            (json.dumps({"source": redact(r.shard), "row": r.row, "id": r.id, "reason": redact(r.reason)}) + "\n").encode()
            for r in self.rejects
        )
        res.parquet = self.writer.commit()
        write_bytes_atomic(self.layout.rejects(self.task.name), lines, self.cfg.storage_options)
        res.stage_seconds["commit"] = time.perf_counter() - t
        res.stage_seconds["total"] = time.perf_counter() - self.t0
        return res


def process_shards(tasks: list[ShardTask], cfg: JobConfig, backend: Backend, cache, thresholds, meta: OutputMeta,
                   progress=None, committed=None, claim=None) -> list[tuple[ShardTask, ShardResult | BaseException]]:
    """Read, compress and commit shards, streaming: one shard, or several small ones whose
    documents share model calls so that a tiny shard does not pay for a whole batch of
    fixed-shape model work. Each shard is read, written and committed on its own, and its
    output does not depend on the company it kept (model calls are batch-invariant).

    Returns each shard's result, or the input error (ShardError) or MemoryBoundExceeded
    that failed it; output appears only for shards where everything worked. Anything
    else raises, with every unfinished shard's output discarded, for the caller to retry.
    `committed(task, cfg, result, meta)` is called as soon as a shard's output is in
    place (shard_task writes its marker then, not after the whole group). `claim()`,
    asked before the first output is published, says whether this attempt may commit;
    when it may not, everything unfinished is discarded and Superseded raised.
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
                if claim is not None and j.error is None and not claim():
                    raise Superseded()
                read_all.remove(j)
                out[j.task.index] = j.error if j.error is not None else j.finish()
                if committed is not None and j.error is None:
                    committed(j.task, cfg, out[j.task.index], meta)

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


def commit_marker(task: ShardTask, cfg: JobConfig, res: ShardResult, meta: OutputMeta) -> None:
    """Stats, then the completion marker (last: it is what makes the shard done). The
    Parquet is looked up before the marker is written and again after: a store that lost
    it (restarted empty, a bucket emptied by hand) must not keep a marker for it. The
    second look matters because the marker's upload retries through an outage and can
    land in a store that came back without the Parquet. The error makes the task retry,
    which writes both again. Then the shard's _failed marker of an earlier run goes."""
    layout = OutputLayout(cfg.output)
    _check_committed(task, cfg, res)
    write_json_atomic(layout.stats(task.name), asdict(res), cfg.storage_options)
    marker = {
        "name": task.name, "input": redact(task.input_url), "rows": res.docs_out, "rejects": res.rejects,
        "docs_in": res.docs_in, "bytes_in": res.bytes_in, "symbols_out": res.symbols_out,
        "parquet": res.parquet, "namespace": meta.namespace, "fingerprint": meta.fingerprint,
        "settings": meta.settings, "precision": meta.precision, "input_fingerprint": task.fingerprint,
    }
    done = layout.marker(Marker.DONE, task.name)
    write_json_atomic(done, marker, cfg.storage_options)
    try:
        _check_committed(task, cfg, res)
    except OSError:
        remove(done, cfg.storage_options)
        raise
    remove(layout.marker(Marker.FAILED, task.name), cfg.storage_options)


def _check_committed(task: ShardTask, cfg: JobConfig, res: ShardResult) -> None:
    url = OutputLayout(cfg.output).shard(task.name)
    fs, path = fsspec.core.url_to_fs(url, **cfg.storage_options)
    fs.invalidate_cache(path)
    try:
        size = fs.info(path).get("size")
    except FileNotFoundError:
        size = None
    if size != res.parquet.get("bytes"):
        raise OSError(f"{redact(url)}: {size} bytes in the store, {res.parquet.get('bytes')} were written")


def mark_failed(task: ShardTask, cfg: JobConfig, err: BaseException, where: str = "") -> ShardResult:
    """`where`: the last frame of the traceback that raised err, when it is known."""
    if isinstance(err, (ShardError, MemoryBoundExceeded)):
        reason = str(err)
    else:
        reason = f"{task.input_url}: {type(err).__name__}: {err}" + (f" (at {where})" if where else "")
    reason = redact(reason)
    try:
        write_json_atomic(OutputLayout(cfg.output).marker(Marker.FAILED, task.name), {"name": task.name, "input": redact(task.input_url), "reason": reason},
                          cfg.storage_options)
    except Exception as e:  # noqa: BLE001 - the output store itself may be what failed
        reason += f" (and the failure could not be recorded in the output: {redact(type(e).__name__ + ': ' + str(e))})"
    return ShardResult(task.name, task.input_url, "failed", reason=reason)
