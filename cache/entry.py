"""Cache keys and self-checking cache entries.

A key is a 16-byte BLAKE2b of the compressor's namespace and the segment bytes, so two
compressors (different weights, numerics or coder settings) never share an entry. An
entry carries the namespace tag, the segment length and a checksum of its body:
`unpack_entry` returns None for anything corrupt or foreign, and the caller recomputes.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np

_HEADER = struct.Struct("<4sB8sIII")  # magic, version, namespace tag, seg len, windows, crc
_MAGIC = b"PCE1"


def segment_key(namespace: str, segment: bytes) -> bytes:
    return hashlib.blake2b(segment, digest_size=16, key=namespace.encode()[:64]).digest()


def _tag(namespace: str) -> bytes:
    return hashlib.blake2b(namespace.encode(), digest_size=8).digest()


def pack_entry(namespace: str, seg_len: int, codes: np.ndarray, counts: np.ndarray) -> bytes:
    body = np.ascontiguousarray(codes, np.uint32).tobytes() + np.ascontiguousarray(counts, np.int32).tobytes()
    return _HEADER.pack(_MAGIC, 1, _tag(namespace), seg_len, len(codes), zlib.crc32(body)) + body


def unpack_entry(namespace: str, seg_len: int, blob: bytes | None):
    """(codes uint32, counts int32) or None when the entry is missing, corrupt, for a
    different compressor or a different segment length."""
    if not blob or len(blob) < _HEADER.size:
        return None
    magic, version, tag, length, n, crc = _HEADER.unpack_from(blob)
    body = blob[_HEADER.size :]
    if magic != _MAGIC or version != 1 or tag != _tag(namespace) or length != seg_len or len(body) != 8 * n:
        return None
    if zlib.crc32(body) != crc:
        return None
    codes = np.frombuffer(body[: 4 * n], np.uint32)
    counts = np.frombuffer(body[4 * n :], np.int32)
    if int(np.maximum(counts, 1).sum()) != seg_len or counts.min(initial=0) < 0:
        return None
    return codes, counts
