"""The shard worker's side of the model: the model actor as a compression backend, and
the global segment cache as the store that backend remembers segments in. Nothing here
imports torch: shard workers stay light, and only model actors (`backends.model_actor`)
load the model.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from cache.entry import pack_entry, segment_key, unpack_entry
from coder import CoderConfig, Packed, Windows, stitch_offsets, unpack
from compressor_model.records import Counts, Entry, compress_documents

from ..store.parquet import BackendInfo, StoredRows


class CachedSegments:
    """A SegmentStore over a get_many/put_many cache (a LocalSegmentCache, or the
    ShardedCache over cache actors): keys and self-checking entries under the
    compressor's namespace, so foreign or corrupt entries read as misses."""

    def __init__(self, cache, namespace: str):
        self.cache, self.namespace = cache, namespace

    def lookup(self, segments: list[bytes]) -> list[Entry | None]:
        blobs = self.cache.get_many([segment_key(self.namespace, s) for s in segments])
        return [unpack_entry(self.namespace, len(s), b) for s, b in zip(segments, blobs)]

    def remember(self, coded: list[tuple[bytes, Entry]]) -> None:
        self.cache.put_many([(segment_key(self.namespace, s), pack_entry(self.namespace, len(s), c, n))
                             for s, (c, n) in coded])


class NeuralBackend:
    """A model service (a Ray actor handle, or the object itself in-process) as a Backend."""

    symbol_type = pa.uint16()

    def __init__(self, service, remote: bool):
        self.service, self.remote = service, remote
        self.info: BackendInfo = self._call("info")
        self.coder = CoderConfig(**self.info.coder)

    def _call(self, name, *args):
        if self.remote:
            return ray.get(getattr(self.service, name).remote(*args))
        return getattr(self.service, name)(*args)

    def segment(self, docs, thresholds):
        return self._call("segment", docs, thresholds)

    def compress(self, docs, offs, cache):
        store = CachedSegments(cache, self.info.namespace) if cache is not None else None
        model = Counts()

        def encode(data, off):
            windows, counted = self._call("encode", data, off)
            model.add(counted)
            return windows

        records, counts = compress_documents(docs, offs, self.coder, encode, store)
        counts.add(model)
        return records, counts

    def decode(self, rows: StoredRows) -> list[bytes | None]:
        """All rows' segments in one decoding call; a row with a segment that does not
        decode comes back None."""
        coder = CoderConfig(**rows.meta.coder)
        n = len(rows)
        win_offs = [rows.get("seg_window_offsets", i).astype(np.int64) for i in range(n)]
        codes = [unpack(Packed(rows.get("symbols", i).astype(np.uint16), rows.get("seg_symbol_offsets", i).astype(np.int64)),
                        np.diff(win_offs[i]), coder)[0] for i in range(n)]
        counts = [rows.get("window_bytes", i).astype(np.int32) for i in range(n)]
        seg_offs = [rows.get("seg_offsets", i).astype(np.int64) for i in range(n)]
        windows = Windows(np.concatenate(codes) if codes else np.zeros(0, np.uint32),
                          np.concatenate(counts) if counts else np.zeros(0, np.int32), stitch_offsets(win_offs))
        data, bad = self._call("decode", windows, stitch_offsets(seg_offs))
        out, pos, seg = [], 0, 0
        for i in range(n):
            size, n_seg = int(rows.n_bytes[i]), len(seg_offs[i]) - 1
            out.append(None if bad[seg: seg + n_seg].any() else data[pos: pos + size].tobytes())
            pos += size
            seg += n_seg
        return out

    def maxrss(self) -> int:
        return self._call("maxrss")
