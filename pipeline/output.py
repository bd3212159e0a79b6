"""Output shards: the versioned Parquet schema (docs/format.md), atomic commits, markers.

Layout under the output URL:

    config.yaml                 resolved job config of the latest run that wrote shards (secrets masked)
    thresholds.json             segmentation thresholds used by every shard, and their
                                sample (bytes, documents, shards, seconds)
    manifest.json               per-shard status, rows, checksums, stats (rewritten by run)
    shards/<name>.parquet       one per input shard
    _rejects/<name>.jsonl       documents that could not be compressed, with reasons
    _stats/<name>.json          per-shard stats (cache hits and timings live here, not
                                in the Parquet, so the Parquet stays byte-identical)
    _done/<name>.json           completion marker: written last, names the checksum
    _failed/<name>.json         why a shard failed (removed once it succeeds)
    _tmp/                       Parquet files being written (local outputs); cleared by the next run
    _runs/<time>-<run>.json     each run's summary (rates, cache, model busy fraction), for reports
    _runs/<time>-<run>.config.yaml  ... and the resolved config it ran with
    _index/markers.json.zst     the markers read so far, by listing tag (pipeline.markers; a cache)
    _cache/<namespace>.pcw.zst  the segment cache's hottest entries, for the next run (pipeline.warm)

A shard counts as done only when its marker exists; the Parquet and rejects files are
committed before the marker, each atomically, so no reader ever sees a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
META_PREFIX = "proxycomp."


def schema(symbol_type: pa.DataType = pa.uint16()) -> pa.Schema:
    return pa.schema(
        [
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("source_row", pa.int64(), nullable=False),
            pa.field("n_bytes", pa.int64(), nullable=False),
            pa.field("raw", pa.binary()),
            pa.field("symbols", pa.list_(symbol_type), nullable=False),
            pa.field("seg_offsets", pa.list_(pa.int32()), nullable=False),
            pa.field("seg_symbol_offsets", pa.list_(pa.int32()), nullable=False),
            pa.field("seg_window_offsets", pa.list_(pa.int32()), nullable=False),
            pa.field("window_bytes", pa.list_(pa.uint16()), nullable=False),
            pa.field("n_segments", pa.int32(), nullable=False),
            pa.field("n_windows", pa.int32(), nullable=False),
            pa.field("n_symbols", pa.int32(), nullable=False),
        ]
    )


@dataclass
class OutRow:
    """One document's output row; arrays as numpy."""

    doc_id: str
    source: str
    source_row: int
    raw: bytes | None
    n_bytes: int
    symbols: np.ndarray
    seg_offsets: np.ndarray
    seg_symbol_offsets: np.ndarray
    seg_window_offsets: np.ndarray
    window_bytes: np.ndarray


def _list_array(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(arrays) + 1, np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat.astype(value_type.to_pandas_dtype()), value_type))


def rows_to_table(rows: list[OutRow], sch: pa.Schema) -> pa.Table:
    sym_type = sch.field("symbols").type.value_type
    cols = {
        "doc_id": pa.array([r.doc_id for r in rows], pa.string()),
        "source": pa.array([r.source for r in rows], pa.string()),
        "source_row": pa.array([r.source_row for r in rows], pa.int64()),
        "n_bytes": pa.array([r.n_bytes for r in rows], pa.int64()),
        "raw": pa.array([r.raw for r in rows], pa.binary()),
        "symbols": _list_array([r.symbols for r in rows], sym_type),
        "seg_offsets": _list_array([r.seg_offsets for r in rows], pa.int32()),
        "seg_symbol_offsets": _list_array([r.seg_symbol_offsets for r in rows], pa.int32()),
        "seg_window_offsets": _list_array([r.seg_window_offsets for r in rows], pa.int32()),
        "window_bytes": _list_array([r.window_bytes for r in rows], pa.uint16()),
        "n_segments": pa.array([len(r.seg_offsets) - 1 for r in rows], pa.int32()),
        "n_windows": pa.array([len(r.window_bytes) for r in rows], pa.int32()),
        "n_symbols": pa.array([len(r.symbols) for r in rows], pa.int32()),
    }
    return pa.Table.from_pydict(cols, schema=sch)


def file_metadata(meta: dict) -> dict[bytes, bytes]:
    """Parquet key-value metadata: proxycomp.<key> -> JSON."""
    out = {f"{META_PREFIX}schema_version".encode(): str(SCHEMA_VERSION).encode()}
    for k, v in sorted(meta.items()):
        out[f"{META_PREFIX}{k}".encode()] = json.dumps(v, sort_keys=True).encode()
    return out


def read_metadata(pf: pq.ParquetFile) -> dict:
    kv = pf.schema_arrow.metadata or {}
    out = {}
    for k, v in kv.items():
        key = k.decode()
        if key.startswith(META_PREFIX):
            name = key[len(META_PREFIX) :]
            out[name] = int(v) if name == "schema_version" else json.loads(v)
    return out


# -- paths and atomic writes ------------------------------------------------------------


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


@contextmanager
def atomic_local_file(url: str, storage_options: dict | None = None, tmp_dir: str | None = None):
    """Yields a local path to write; on success it becomes `url` in one step (rename on
    a local filesystem, a single upload to an object store), on error nothing appears.
    Local temporary files go to tmp_dir (same filesystem) when given, so that nothing
    half-written ever sits among the finished files."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if _is_local(fs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        where = fsspec.core.url_to_fs(tmp_dir)[1] if tmp_dir else (os.path.dirname(path) or ".")
        os.makedirs(where, exist_ok=True)
        tmp = os.path.join(where, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    else:
        fd, tmp = tempfile.mkstemp(prefix="proxycomp-", suffix=os.path.basename(path))
        os.close(fd)
    try:
        yield tmp
        if _is_local(fs):
            os.replace(tmp, path)
        else:
            fs.put_file(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(url: str, data: bytes, storage_options: dict | None = None) -> None:
    with atomic_local_file(url, storage_options) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json_atomic(url: str, obj, storage_options: dict | None = None) -> None:
    write_bytes_atomic(url, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), storage_options)


def read_json(url: str, storage_options: dict | None = None):
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        return json.loads(f.read())


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Streams row groups of exactly `row_group_rows` rows (the last one shorter) into a
    local temp Parquet file, whatever batches the rows arrive in, so the file's bytes do
    not depend on batching; `commit` publishes it."""

    def __init__(self, url: str, sch: pa.Schema, meta: dict, compression: str, storage_options: dict | None,
                 tmp_dir: str | None = None, row_group_rows: int = 1024):
        self.url, self.schema = url, sch.with_metadata(file_metadata(meta))
        self._ctx = atomic_local_file(url, storage_options, tmp_dir)
        self.path = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self.path, self.schema, compression=compression, write_statistics=True)
        self.row_group_rows = max(1, row_group_rows)
        self._pending: list[OutRow] = []
        self.rows = 0

    def write(self, rows: list[OutRow]) -> None:
        self._pending += rows
        while len(self._pending) >= self.row_group_rows:
            self._flush(self._pending[: self.row_group_rows])
            self._pending = self._pending[self.row_group_rows :]

    def _flush(self, rows: list[OutRow]) -> None:
        self._writer.write_table(rows_to_table(rows, self.schema), row_group_size=len(rows))
        self.rows += len(rows)

    def commit(self) -> dict:
        """Close, checksum and publish; returns {rows, bytes, sha256}."""
        if self._pending:
            self._flush(self._pending)
            self._pending = []
        self._writer.close()
        info = {"rows": self.rows, "bytes": os.path.getsize(self.path), "sha256": sha256_file(self.path)}
        self._ctx.__exit__(None, None, None)
        return info

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def exists(url: str, storage_options: dict) -> bool:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return fs.exists(path)


def remove(url: str, storage_options: dict) -> None:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(path):
        fs.rm(path)
