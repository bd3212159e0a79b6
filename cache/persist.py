"""The hottest cache entries as one blob, so the next run of the same compressor (a rerun
a week later, the next slice of the corpus) starts warm.

Layout (zstd-compressed): magic `PCW1`, entry count, then per entry the 16-byte key, its
hit count and the entry blob's length and bytes. Each blob keeps the self-checks of
`cache.entry` (namespace tag, segment length, checksum), checked where it is used: a
damaged or foreign entry is recomputed, never trusted. A damaged file as a whole
(`ValueError`) means starting cold.
"""

from __future__ import annotations

import struct

import zstandard

_MAGIC = b"PCW1"
_HEAD = struct.Struct("<4sI")
_ITEM = struct.Struct("<16sII")  # key, hits, blob length


def dump_entries(items: list[tuple[bytes, bytes, int]]) -> bytes:
    """(key, blob, hits) entries -> bytes."""
    parts = [_HEAD.pack(_MAGIC, len(items))]
    for key, blob, hits in items:
        parts.append(_ITEM.pack(key, min(hits, 0xFFFFFFFF), len(blob)))
        parts.append(blob)
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(b"".join(parts))


def load_entries(data: bytes) -> list[tuple[bytes, bytes, int]]:
    try:
        d = zstandard.ZstdDecompressor().decompressobj()
        raw = d.decompress(data)
    except zstandard.ZstdError as e:
        raise ValueError(f"not a cache file: {e}") from None
    if not d.eof or d.unused_data:
        raise ValueError("not a cache file: a truncated or extended frame")
    if len(raw) < _HEAD.size:
        raise ValueError("not a cache file: too short")
    magic, n = _HEAD.unpack_from(raw)
    if magic != _MAGIC:
        raise ValueError("not a cache file: bad magic")
    out, pos = [], _HEAD.size
    for _ in range(n):
        if pos + _ITEM.size > len(raw):
            raise ValueError("cache file truncated")
        key, hits, size = _ITEM.unpack_from(raw, pos)
        pos += _ITEM.size
        if pos + size > len(raw):
            raise ValueError("cache file truncated")
        out.append((key, raw[pos : pos + size], hits))
        pos += size
    if pos != len(raw):
        raise ValueError("cache file has trailing bytes")
    return out
