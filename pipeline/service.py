"""The shard worker's side of the services: the model actor as a compression backend,
and the global segment cache as the store that backend remembers segments in. Nothing
here imports torch: shard workers stay light, and only model actors
(`pipeline.model_service`) load the model.
"""

from __future__ import annotations

import pyarrow as pa
import ray

from cache.entry import pack_entry, segment_key, unpack_entry
from coder import CoderConfig
from compressor_model.records import Counts, Entry, compress_documents


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
    """The shard worker's view of a model service (local object or Ray actor)."""

    symbol_type = pa.uint16()

    def __init__(self, service, remote: bool):
        self.service, self.remote = service, remote
        self.info = self._call("info")
        self.namespace = self.info["namespace"]
        self.coder = CoderConfig(**self.info["coder"])

    def _call(self, name, *args):
        if self.remote:
            return ray.get(getattr(self.service, name).remote(*args))
        return getattr(self.service, name)(*args)

    def segment(self, docs, thresholds):
        return self._call("segment", docs, thresholds)

    def compress(self, docs, offs, cache):
        store = CachedSegments(cache, self.namespace) if cache is not None else None
        model = Counts()

        def encode(data, off):
            windows, counted = self._call("encode", data, off)
            model.add(counted)
            return windows

        records, counts = compress_documents(docs, offs, self.coder, encode, store)
        counts.add(model)
        return records, counts

    def maxrss(self) -> int:
        return self._call("maxrss")
