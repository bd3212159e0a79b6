"""Compressed documents, and the torch-free half of compression: segment keys, the cache,
de-duplication and packing. Shard workers run this next to a model actor that does
the model work (`encode_segments`), so it must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cache.entry import pack_entry, segment_key, unpack_entry
from coder import CoderConfig, Windows, pack


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

    @property
    def windows(self) -> Windows:
        return Windows(self.window_codes, self.window_counts, self.win_off)


@dataclass
class Stats:
    docs: int = 0
    bytes: int = 0
    segments: int = 0
    unique_segments: int = 0  # after de-duplication within the call
    cache_hits: int = 0
    coded_bytes: int = 0  # bytes the model actually coded (misses)
    windows: int = 0
    symbols: int = 0
    seg_positions: int = 0  # model positions computed for segmentation (padding included)
    code_positions: int = 0  # useful model positions for coding
    code_padded_positions: int = 0  # rows of the model calls made for coding
    seg_time: float = 0.0
    code_time: float = 0.0
    model_time: float = 0.0  # host time launching and waiting for model calls, both stages

    def add(self, other: "Stats") -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


def compress_documents(docs: list[bytes], offs: list[np.ndarray], namespace: str, coder_cfg: CoderConfig,
                       encode_segments, cache=None) -> tuple[list[DocRecord], Stats]:
    """Records for segmented documents: every distinct segment is looked up in the cache
    and the misses are coded once each by `encode_segments(data, seg_off) -> Windows`
    (in this process, or on a model actor). Returns the records and what happened."""
    segs = [(d, int(a), int(b)) for d, off in enumerate(offs) for a, b in zip(off[:-1], off[1:])]
    keys = [segment_key(namespace, docs[d][a:b]) for d, a, b in segs]
    first: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    ukeys = list(first)
    found: dict[bytes, tuple] = {}
    if cache is not None and ukeys:
        for k, blob in zip(ukeys, cache.get_many(ukeys)):
            d, a, b = segs[first[k]]
            entry = unpack_entry(namespace, b - a, blob)
            if entry is not None:
                found[k] = entry
    todo = [k for k in ukeys if k not in found]
    st = Stats(docs=len(docs), bytes=sum(len(d) for d in docs), segments=len(segs), unique_segments=len(ukeys),
               cache_hits=len(ukeys) - len(todo))
    if todo:
        pieces = [docs[segs[first[k]][0]][segs[first[k]][1] : segs[first[k]][2]] for k in todo]
        off = np.zeros(len(pieces) + 1, np.int64)
        np.cumsum([len(p) for p in pieces], out=off[1:])
        win = encode_segments(np.frombuffer(b"".join(pieces), np.uint8), off)
        new = []
        for j, k in enumerate(todo):
            a, b = win.win_off[j], win.win_off[j + 1]
            found[k] = (win.codes[a:b], win.counts[a:b])
            new.append((k, pack_entry(namespace, len(pieces[j]), win.codes[a:b], win.counts[a:b])))
        if cache is not None:
            cache.put_many(new)
        st.coded_bytes = int(off[-1])
    hit_keys = set(ukeys) - set(todo)
    records, i = [], 0
    for d, off in enumerate(offs):
        n_seg = len(off) - 1
        mine = keys[i : i + n_seg]
        i += n_seg
        rec = _record(len(docs[d]), off, [found[k] for k in mine], coder_cfg)
        rec.cache_hits = sum(1 for k in mine if k in hit_keys)
        records.append(rec)
    st.windows = sum(len(r.window_counts) for r in records)
    st.symbols = sum(len(r.symbols) for r in records)
    return records, st


def _record(n_bytes: int, off: np.ndarray, entries: list[tuple], coder_cfg: CoderConfig) -> DocRecord:
    win_off = np.zeros(len(entries) + 1, np.int64)
    np.cumsum([len(c) for c, _ in entries], out=win_off[1:])
    codes = np.concatenate([c for c, _ in entries]).astype(np.uint32) if entries else np.zeros(0, np.uint32)
    counts = np.concatenate([n for _, n in entries]).astype(np.int32) if entries else np.zeros(0, np.int32)
    packed = pack(Windows(codes, counts, win_off), coder_cfg)
    return DocRecord(n_bytes, np.asarray(off, np.int64), win_off, counts, codes, packed.sym_off, packed.symbols)
