"""Synthetic proxycomp output (no model needed) for trainer-side tests."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from pipeline.store.parquet import OutputMeta, OutRow, rows_to_table, schema


def synthetic_output(root, files: int = 3, groups: int = 4, docs_per_group: int = 25, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    root.mkdir(parents=True, exist_ok=True)
    sch = schema().with_metadata(OutputMeta("neural", namespace="synthetic", fingerprint="", numerics="", n_symbols=65536).key_value())
    k = 0
    for f in range(files):
        path = root / f"part-{f:05d}.parquet"
        with pq.ParquetWriter(path, sch) as w:
            for g in range(groups):
                rows = []
                for _ in range(docs_per_group):
                    n = int(rng.integers(5, 300))
                    raw = f"doc{k:05d}:".encode() + bytes(rng.integers(32, 127, n, dtype=np.uint8))
                    sym = rng.integers(0, 65536, max(1, len(raw) // 5)).astype(np.uint16)
                    rows.append(OutRow(f"d{k}", "synthetic", k, raw, len(raw), sym, np.array([0, len(raw)]),
                                       np.array([0, len(sym)]), np.array([0, len(sym)]), np.ones(len(sym), np.uint16)))
                    k += 1
                w.write_table(rows_to_table(rows, sch))
        paths.append(str(path))
    return paths
