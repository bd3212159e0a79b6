"""Reading proxycomp output: which files and row groups there are, what they hold.

The producer's contract is docs/format.md: one row per document with `n_bytes`, `raw`
(nullable), `symbols` and `n_symbols`; Parquet key-value metadata `proxycomp.<key>`
holding JSON, of which the reader needs `compressor`, `namespace` and `n_symbols`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow.parquet as pq

META_PREFIX = "proxycomp."


@dataclass(frozen=True)
class Unit:
    """One row group: the unit of dealing work to ranks and workers."""

    url: str
    row_group: int
    rows: int
    has_null_raw: bool | None  # None: the file has no statistics to tell


def read_metadata(pf: pq.ParquetFile) -> dict:
    out = {}
    for k, v in (pf.schema_arrow.metadata or {}).items():
        key = k.decode()
        if key.startswith(META_PREFIX):
            out[key[len(META_PREFIX):]] = json.loads(v)
    return out


def _files(urls, storage_options: dict) -> list[str]:
    files = []
    for url in urls:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        proto = url.split("://", 1)[0] + "://" if "://" in url else ""
        found = [path] if fs.isfile(path) else sorted(p for p in fs.find(path) if p.endswith(".parquet"))
        files += [proto + p if proto else p for p in found]
    if not files:
        raise ValueError(f"no .parquet files under {list(urls)}")
    return sorted(files)


def _raw_nulls(pf: pq.ParquetFile, group: int) -> bool | None:
    col = pf.schema_arrow.get_field_index("raw")
    stats = pf.metadata.row_group(group).column(col).statistics
    if stats is None or not stats.has_null_count:
        return None
    return stats.null_count > 0


def list_units(urls, storage_options: dict | None = None) -> tuple[list[Unit], dict]:
    """Row groups of every output file in sorted order, and the metadata they share."""
    so = storage_options or {}
    units, meta, first = [], None, None
    for url in _files(urls, so):
        with fsspec.open(url, "rb", **so) as f:
            pf = pq.ParquetFile(f)
            m = read_metadata(pf)
            missing = [k for k in ("compressor", "namespace", "n_symbols") if k not in m]
            if missing:
                raise ValueError(f"{url}: not proxycomp output (metadata lacks proxycomp.{', proxycomp.'.join(missing)})")
            key = (m["compressor"], m["n_symbols"], m["namespace"])
            if meta is None:
                meta, first = m, key
            elif key != first:
                raise ValueError(f"{url}: made by {key[0]} ({key[2]}, {key[1]} symbols), unlike "
                                 f"{first[0]} ({first[2]}, {first[1]} symbols) in the other files")
            units += [Unit(url, g, pf.metadata.row_group(g).num_rows, _raw_nulls(pf, g))
                      for g in range(pf.num_row_groups)]
    return units, meta


class RowGroup:
    """One row group's rows: lengths always (two small columns), payload when asked for."""

    def __init__(self, unit: Unit, storage_options: dict):
        self.unit, self.so = unit, storage_options
        self._lengths = None
        self._table = None

    def _read(self, columns):
        with fsspec.open(self.unit.url, "rb", **self.so) as f:
            return pq.ParquetFile(f).read_row_group(self.unit.row_group, columns=columns)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_bytes, n_symbols) of every row."""
        if self._lengths is None:
            t = self._read(["n_bytes", "n_symbols"])
            self._lengths = (t.column("n_bytes").to_numpy(), t.column("n_symbols").to_numpy())
        return self._lengths

    def row(self, row: int, need_raw: bool) -> tuple[bytes | None, np.ndarray]:
        if self._table is None:
            self._table = self._read(["raw", "symbols"])
        raw = self._table.column("raw")[row].as_py()
        if need_raw and raw is None:
            raise ValueError(f"{self.unit.url} row group {self.unit.row_group} row {row}: raw bytes were not stored "
                             "(output_format.store_raw: false), but the mix draws raw views")
        return raw, self._table.column("symbols")[row].values.to_numpy()
