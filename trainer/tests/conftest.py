"""Synthetic proxycomp output written with pyarrow alone (the trainer's tests run where
the service is not installed). Only the columns and metadata keys the reader relies on
(docs/format.md) are written."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

SCHEMA = pa.schema([
    pa.field("doc_id", pa.string()),
    pa.field("n_bytes", pa.int64()),
    pa.field("raw", pa.binary(), nullable=True),
    pa.field("symbols", pa.list_(pa.uint16())),
    pa.field("n_symbols", pa.int32()),
])


def synthetic_output(root, files: int = 3, groups: int = 4, docs_per_group: int = 25, seed: int = 0,
                     store_raw: bool = True, long_doc: int = 0, meta: dict | None = None) -> list[str]:
    """files x groups x docs_per_group documents; long_doc > 0 makes the first one that long."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    kv = {"compressor": "neural", "n_symbols": 65536, "namespace": "synthetic"} if meta is None else meta
    sch = SCHEMA.with_metadata({f"proxycomp.{k}": json.dumps(v) for k, v in kv.items()})
    paths, k = [], 0
    for f in range(files):
        path = root / f"part-{f:05d}.parquet"
        with pq.ParquetWriter(path, sch) as w:
            for _ in range(groups):
                cols = {name: [] for name in SCHEMA.names}
                for _ in range(docs_per_group):
                    n = long_doc if (k == 0 and long_doc) else int(rng.integers(5, 300))
                    raw = f"doc{k:05d}:".encode() + bytes(rng.integers(32, 127, n, dtype=np.uint8))
                    sym = rng.integers(0, 65536, max(1, len(raw) // 5)).astype(np.uint16)
                    for name, v in zip(SCHEMA.names, (f"d{k}", len(raw), raw if store_raw else None, sym, len(sym))):
                        cols[name].append(v)
                    k += 1
                w.write_table(pa.Table.from_pydict(cols, schema=sch))
        paths.append(str(path))
    return paths


@pytest.fixture
def make_output():
    return synthetic_output


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic_output(root)
    return str(root)
