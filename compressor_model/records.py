"""Compressed documents, and the torch-free half of compression: de-duplication,
looking segments up in a store, packing. Shard workers run this next to a model actor
that does the model work (`encode_segments`), so it must not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from coder import CoderConfig, Windows, pack

Entry = tuple[np.ndarray, np.ndarray]  # one segment's window codes and byte counts


class SegmentStore(Protocol):
    """Where coded segments are remembered across calls (the pipeline's global cache)."""

    def lookup(self, segments: list[bytes]) -> list[Entry | None]: ...

    def remember(self, coded: list[tuple[bytes, Entry]]) -> None: ...


@dataclass
class DocRecord:
    """One document, compressed. Segment s covers bytes seg_off[s]:seg_off[s+1], its
    windows are window_counts[win_off[s]:win_off[s+1]] and its symbols
    symbols[sym_off[s]:sym_off[s+1]]."""

    n_bytes: int
    seg_off: np.ndarray  # int64 [S + 1]
    win_off: np.ndarray  # int64 [S + 1]
    window_counts: np.ndarray  # int32 [n_windows], bytes per window (0: escape)
    window_codes: np.ndarray  # uint32 [n_windows]
    sym_off: np.ndarray  # int64 [S + 1]
    symbols: np.ndarray  # uint16 [n_symbols]
    cache_hits: int = 0  # segments served by the cache


@dataclass(kw_only=True)
class Counts:
    """What compression adds up: one type for a model call, a model actor, a shard and a
    whole run (each fills the fields it knows; sums are field by field)."""

    docs_in: int = 0  # input rows: documents and rejects
    docs_out: int = 0  # documents compressed
    rejects: int = 0
    bytes_in: int = 0  # bytes of the documents compressed
    symbols_out: int = 0
    windows: int = 0
    segments: int = 0  # segment occurrences
    unique_segments: int = 0  # distinct segments per model call, looked up in the cache
    cache_hits: int = 0
    coded_bytes: int = 0  # bytes the model coded (cache misses)
    seg_positions: int = 0  # model positions computed for segmentation (padding included)
    code_positions: int = 0  # useful model positions for coding
    code_padded_positions: int = 0  # rows of the model calls made for coding
    seg_time: float = 0.0  # model actor seconds in segmentation
    code_time: float = 0.0  # ... in the windowed coding loop
    model_time: float = 0.0  # ... launching and waiting for model calls, both stages

    def add(self, other: Counts) -> None:
        for f in fields(Counts):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def since(self, before: Counts) -> Counts:
        """What was counted after `before` was copied from these counts."""
        return Counts(**{f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(Counts)})

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


def compress_documents(docs: list[bytes], offs: list[np.ndarray], coder_cfg: CoderConfig,
                       encode_segments: Callable[[np.ndarray, np.ndarray], Windows],
                       store: SegmentStore | None = None) -> tuple[list[DocRecord], Counts]:
    """Records for segmented documents: every distinct segment is looked up in `store`
    and the misses are coded once each by `encode_segments(data, seg_off) -> Windows`
    (in this process, or on a model actor). Returns the records and what happened."""
    segs = [docs[d][int(a) : int(b)] for d, off in enumerate(offs) for a, b in zip(off[:-1], off[1:])]
    unique = list(dict.fromkeys(segs))
    found: dict[bytes, Entry] = {}
    if store is not None and unique:
        found = {seg: e for seg, e in zip(unique, store.lookup(unique)) if e is not None}
    todo = [seg for seg in unique if seg not in found]
    hits = set(found)
    st = Counts(docs_out=len(docs), bytes_in=sum(len(d) for d in docs), segments=len(segs),
                unique_segments=len(unique), cache_hits=len(hits))
    if todo:
        off = np.zeros(len(todo) + 1, np.int64)
        np.cumsum([len(p) for p in todo], out=off[1:])
        win = encode_segments(np.frombuffer(b"".join(todo), np.uint8), off)
        coded = []
        for j, seg in enumerate(todo):
            a, b = win.win_off[j], win.win_off[j + 1]
            found[seg] = (win.codes[a:b], win.counts[a:b])
            coded.append((seg, found[seg]))
        if store is not None:
            store.remember(coded)
        st.coded_bytes = int(off[-1])
    records, i = [], 0
    for d, off in enumerate(offs):
        mine = segs[i : i + len(off) - 1]
        i += len(off) - 1
        rec = _record(len(docs[d]), off, [found[seg] for seg in mine], coder_cfg)
        rec.cache_hits = sum(1 for seg in mine if seg in hits)
        records.append(rec)
    st.windows = sum(len(r.window_counts) for r in records)
    st.symbols_out = sum(len(r.symbols) for r in records)
    return records, st


def _record(n_bytes: int, off: np.ndarray, entries: list[tuple], coder_cfg: CoderConfig) -> DocRecord:
    win_off = np.zeros(len(entries) + 1, np.int64)
    np.cumsum([len(c) for c, _ in entries], out=win_off[1:])
    codes = np.concatenate([c for c, _ in entries]).astype(np.uint32) if entries else np.zeros(0, np.uint32)
    counts = np.concatenate([n for _, n in entries]).astype(np.int32) if entries else np.zeros(0, np.int32)
    packed = pack(Windows(codes, counts, win_off), coder_cfg)
    return DocRecord(n_bytes, np.asarray(off, np.int64), win_off, counts, codes, packed.sym_off, packed.symbols)
