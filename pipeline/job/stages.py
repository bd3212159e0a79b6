"""The stages a batch of documents goes through in a shard task: segment, code (cache
lookups, the misses on the backend, packing), write. Each is a small callable; `Stage`
times it and counts what went through, and the totals land in the shard's stats."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from coder import stitch_offsets
from compressor_model.corpus import Document
from compressor_model.records import Counts, DocRecord

from ..backends.base import Backend
from ..config import JobConfig
from ..redact import redact
from ..store.parquet import OutRow, ShardWriter


@dataclass
class ShardResult(Counts):
    name: str
    input_url: str
    status: str  # "done", "failed", or "superseded" (job.shard.SUPERSEDED: another attempt committed it)
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


