"""Export for the paper's public trainer (facebookresearch/lingua fork,
LZhengisme/proxy-compression), read with `data.compression_alg_config=ac_m1_key-pack_<b>-<key>`.

Each output shard becomes `<dest>/<name>.chunk.00.jsonl` (the trainer globs
`*chunk.*.jsonl`), one line per document:

    {"text": "<the document>", "<key>": "<base64>"}

The base64 decodes to a byte string packing 9-bit values, first value in the lowest
bits (little-endian-first): value 0-255 is a raw byte, 256 + v a compressed byte v. A
document's windows are written as compressed bytes, each W-bit window as ceil(W/8)
big-endian bytes (the window's bits first, zero bits after), so W = 16 gives two
compressed bytes per symbol. The key (default `m1_ac_ow16`) must contain `ow<W>`.
"""

from __future__ import annotations

import base64
import json
import os

import fsspec
import numpy as np
import pyarrow.parquet as pq

from coder import CoderConfig, Packed, unpack

from .config import JobConfig
from .output import read_json, read_metadata


def pack9(values: np.ndarray) -> bytes:
    """9-bit values -> bytes, value i in bits [9i, 9i + 9) of a little-endian stream."""
    values = np.asarray(values, np.int64)
    if values.size and (values.min() < 0 or values.max() > 0x1FF):
        raise ValueError("pack9: values must be in [0, 512)")
    bits = ((values[:, None] >> np.arange(9)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="little").tobytes()


def unpack9(data: bytes) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    n = len(bits) // 9
    return (bits[: n * 9].reshape(n, 9).astype(np.int64) << np.arange(9)).sum(1)


def window_bytes(codes: np.ndarray, window_bits: int) -> np.ndarray:
    """Each W-bit window code as ceil(W/8) big-endian bytes, left-aligned."""
    nbytes = (window_bits + 7) // 8
    aligned = np.asarray(codes, np.uint64) << np.uint64(nbytes * 8 - window_bits)
    shifts = np.arange(nbytes - 1, -1, -1, dtype=np.uint64) * np.uint64(8)
    return ((aligned[:, None] >> shifts) & np.uint64(0xFF)).astype(np.int64).reshape(-1)


def document_field(symbols, seg_symbol_offsets, seg_window_offsets, coder: CoderConfig) -> str:
    codes, _ = unpack(Packed(np.asarray(symbols, np.uint16), np.asarray(seg_symbol_offsets, np.int64)),
                      np.diff(np.asarray(seg_window_offsets, np.int64)), coder)
    return base64.b64encode(pack9(256 + window_bytes(codes, coder.window_bits))).decode()


def export_lingua(cfg: JobConfig, dest: str, key: str = "m1_ac_ow16", log=print) -> dict:
    from .job import plan_tasks

    so = cfg.storage_options
    written = {}
    for t in plan_tasks(cfg):
        fs, marker = fsspec.core.url_to_fs(t.out(cfg, "_done"), **so)
        if not fs.exists(marker):
            continue
        with fsspec.open(t.out(cfg, "shards"), "rb", **so) as f:
            pf = pq.ParquetFile(f)
            meta = read_metadata(pf)
            if meta.get("compressor") != "neural":
                raise ValueError(f"{t.name}: lingua export needs neural output, this was made by {meta.get('compressor')}")
            coder = CoderConfig(**meta["coder"])
            if f"ow{coder.window_bits}" not in key.split("_"):
                raise ValueError(f"key {key!r} must contain ow{coder.window_bits} (the trainer reads W from it)")
            table = pf.read(columns=["raw", "symbols", "seg_symbol_offsets", "seg_window_offsets"])
        lines = []
        for i in range(table.num_rows):
            raw = table.column("raw")[i].as_py()
            if raw is None:
                raise ValueError(f"{t.name}: raw text was not stored (output_format.store_raw: false); the trainer needs it")
            field = document_field(table.column("symbols")[i].values.to_numpy(),
                                   table.column("seg_symbol_offsets")[i].as_py(),
                                   table.column("seg_window_offsets")[i].as_py(), coder)
            lines.append(json.dumps({"text": raw.decode("utf-8"), key: field}, ensure_ascii=False))
        path = os.path.join(dest, f"{t.name}.chunk.00.jsonl")
        os.makedirs(dest, exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
        os.replace(path + ".tmp", path)
        written[t.name] = {"path": path, "rows": len(lines), "marker_rows": read_json(t.out(cfg, "_done"), so)["rows"]}
        log(f"{t.name}: {len(lines)} documents -> {path}")
    return written
