"""Output shards' Parquet: the versioned schema (docs/format.md), the typed metadata
stamped into every file, the streaming writer and the one reader (verify, export)."""


from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import JobError
from .files import atomic_local_file, sha256_file

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


@dataclass(frozen=True)
class BackendInfo:
    """What a compressor stamps into every output it makes (and a reader checks)."""

    compressor: str  # pipeline.config.Compressor's value
    namespace: str  # segment-cache namespace: equal only for byte-identical outputs
    fingerprint: str  # of the model (or tokenizer), known before a model loads
    numerics: str  # the arithmetic that made the probabilities ("int8-v1", a float kind, "exact")
    n_symbols: int
    coder: dict = field(default_factory=dict)  # CoderConfig fields (neural only)
    precision: str | None = None  # engine precision (neural only)
    training: dict | None = None  # the checkpoint's training record (neural only)


@dataclass(frozen=True)
class OutputMeta(BackendInfo):
    """A shard's Parquet key-value metadata, `proxycomp.<field>` -> JSON (docs/format.md)."""

    coder_format_version: int | None = None
    config: dict | None = None  # the content settings (pipeline.config.content_config)
    settings: str | None = None  # their key, with the model's fingerprint
    thresholds: dict | None = None
    source: str | None = None  # the input shard (redacted)
    schema_version: int = SCHEMA_VERSION

    # Neural outputs only (gzip and tokenizer outputs have never carried them).
    _NEURAL_ONLY = ("precision", "training")

    @classmethod
    def of(cls, info: BackendInfo, **job) -> OutputMeta:
        return cls(**{**dataclasses.asdict(info), **job})

    def with_(self, **changes) -> OutputMeta:
        return dataclasses.replace(self, **changes)

    def key_value(self) -> dict[bytes, bytes]:
        out = {f"{META_PREFIX}schema_version".encode(): str(self.schema_version).encode()}
        for f in sorted(dataclasses.fields(self), key=lambda f: f.name):
            v = getattr(self, f.name)
            if f.name == "schema_version" or (f.name in self._NEURAL_ONLY and self.compressor != "neural"):
                continue
            out[f"{META_PREFIX}{f.name}".encode()] = json.dumps(v, sort_keys=True).encode()
        return out

    @classmethod
    def from_key_value(cls, kv: dict[bytes, bytes] | None, where: str = "") -> OutputMeta:
        got = {}
        for k, v in (kv or {}).items():
            key = k.decode()
            if key.startswith(META_PREFIX):
                name = key[len(META_PREFIX):]
                got[name] = int(v) if name == "schema_version" else json.loads(v)
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("compressor", "namespace") if n not in got]
        if missing:
            raise JobError(f"{where}: not a proxycomp output shard (no {', '.join(META_PREFIX + n for n in missing)} "
                             "in its Parquet metadata)")
        got.setdefault("fingerprint", "")
        got.setdefault("numerics", "")
        got.setdefault("n_symbols", 0)
        return cls(**{k: v for k, v in got.items() if k in known})


@dataclass
class StoredRows:
    """Rows of one output shard as numpy: list columns as one flat array plus offsets
    (row i's values are `flat[off[i]:off[i+1]]`), never Python lists per value."""

    meta: OutputMeta
    rows: np.ndarray  # the Parquet row index of each
    doc_id: list[str]
    source_row: np.ndarray
    n_bytes: np.ndarray
    raw: list[bytes | None]
    lists: dict[str, tuple[np.ndarray, np.ndarray]]  # column -> (flat values, offsets)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, column: str, i: int) -> np.ndarray:
        flat, off = self.lists[column]
        return flat[off[i]: off[i + 1]]


LIST_COLUMNS = ("symbols", "seg_offsets", "seg_symbol_offsets", "seg_window_offsets", "window_bytes")


def _flat(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    off = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False) if len(arr.values) else np.zeros(0, arr.type.value_type.to_pandas_dtype())
    return values[off[0]: off[-1]], off - off[0]


def read_meta(url: str, storage_options: dict | None = None) -> OutputMeta:
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        return OutputMeta.from_key_value(pq.ParquetFile(f).schema_arrow.metadata, url)


def read_rows(url: str, storage_options: dict | None = None, rows: list[int] | None = None,
              columns: tuple[str, ...] = LIST_COLUMNS) -> StoredRows:
    """The output shard at `url` (all rows, or the listed ones), with its metadata: what
    verify, export and tests read an output through."""
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        pf = pq.ParquetFile(f)
        meta = OutputMeta.from_key_value(pf.schema_arrow.metadata, url)
        table = pf.read(columns=["doc_id", "source_row", "n_bytes", "raw", *columns])
    index = np.arange(table.num_rows) if rows is None else np.asarray(rows, np.int64)
    if rows is not None:
        table = table.take(pa.array(index))
    return StoredRows(meta, index, table.column("doc_id").to_pylist(), table.column("source_row").to_numpy(),
                      table.column("n_bytes").to_numpy(), table.column("raw").to_pylist(),
                      {c: _flat(table.column(c)) for c in columns})


class ShardWriter:
    """Streams row groups of exactly `row_group_rows` rows (the last one shorter) into a
    local temp Parquet file, whatever batches the rows arrive in, so the file's bytes do
    not depend on batching; `commit` publishes it."""

    def __init__(self, url: str, sch: pa.Schema, meta: OutputMeta, compression: str, storage_options: dict | None,
                 tmp_dir: str | None = None, row_group_rows: int = 1024):
        self.url, self.schema = url, sch.with_metadata(meta.key_value())
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
