"""Export for the paper's public trainer (facebookresearch/lingua fork,
LZhengisme/proxy-compression), read there with
`data.compression_alg_config=ac_m1_key-pack_<B>-<key>`.

Layout (what its loader globs, `<root_dir>/<source>/*chunk.*.jsonl`):

    <dest>/<name>/<name>.chunk.00.jsonl ... <name>.chunk.<N-1>.jsonl
    <dest>/<name>/export.json              what was exported, and the trainer settings

The loader gives each rank one chunk (rank % N) and interleaves the ranks that share it,
so N must be the trainer's world size or a divisor of it, and a chunk must already be
shuffled: every document goes to one chunk chosen by a seeded hash, and lines are in
seeded-hash order within a chunk. One line per document:

    {"text": "<the document>", "<key>": "<base64>"}

The base64 decodes to a byte string packing 9-bit values, first value in the lowest
bits: value 0-255 is a raw byte, 256 + v a compressed byte v. A document's windows are
written as compressed bytes, each W-bit window as ceil(W/8) big-endian bytes (the
window's bits first, zero bits after), so W = 16 gives two compressed bytes per symbol.
The trainer regroups them into B-bit values (`pack_<B>`), which its code requires to
divide W. The key (default `m1_ac_ow<W>`) must contain `ow<W>`: the trainer reads W there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np

from coder import CoderConfig, Packed, unpack

from ..config import JobConfig
from ..errors import SettingsError
from ..job.plan import plan_tasks
from ..store.layout import OutputLayout
from ..store.markers import MarkerIndex
from ..store.parquet import read_rows


@dataclass(frozen=True)
class LinguaExport:
    dest: str  # local directory; <dest>/<name>/ is replaced as a whole
    chunks: int = 1  # the trainer's world size or a divisor of it
    seed: int = 0
    name: str = "proxycomp"  # the source name in the trainer's data.sources
    key: str = ""  # default m1_ac_ow<W>
    pack: int = 0  # the trainer's pack_<B>; default W


def pack9(values: np.ndarray) -> bytes:
    """9-bit values -> bytes, value i in bits [9i, 9i + 9) of a little-endian stream."""
    values = np.asarray(values, np.int64)
    if values.size and (values.min() < 0 or values.max() > 0x1FF):
        raise SettingsError("pack9: values must be in [0, 512)")
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


def _settings(coder: CoderConfig, spec: LinguaExport, where: str) -> tuple[str, int]:
    W = coder.window_bits
    key, pack = spec.key or f"m1_ac_ow{W}", spec.pack or W
    if f"ow{W}" not in key.split("_"):
        raise SettingsError(f"{where}: key {key!r} must contain ow{W} (the trainer reads W from it)")
    if W % pack:
        raise SettingsError(f"{where}: W = {W} cannot be regrouped into {pack}-bit values (the trainer's "
                         f"pack_compressed_spans requires pack to divide W); use --pack {W} or a divisor of it")
    return key, pack


def _place(seed: int, shard: str, row: int, chunks: int) -> tuple[int, int]:
    h = int.from_bytes(hashlib.blake2b(f"{seed}\0{shard}\0{row}".encode(), digest_size=8).digest(), "little")
    return h % chunks, h


def export_lingua(cfg: JobConfig, spec: LinguaExport, log=print) -> dict:
    if spec.chunks < 1:
        raise SettingsError("chunks must be at least 1")
    so = cfg.storage_options
    dest = os.path.abspath(spec.dest)  # what the trainer is told to read, from wherever it starts
    final = os.path.join(dest, spec.name)
    work = final + ".export-tmp"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    parts = [open(os.path.join(work, f"part.{c:02d}"), "w", encoding="utf-8") for c in range(spec.chunks)]
    settings, shards, docs = None, 0, 0
    done = MarkerIndex(cfg.output, so).done
    try:
        for t in plan_tasks(cfg):
            if t.name not in done:
                continue
            rows = read_rows(OutputLayout(cfg.output).shard(t.name), so,
                             columns=("symbols", "seg_symbol_offsets", "seg_window_offsets", "window_bytes"))
            if rows.meta.compressor != "neural":
                raise SettingsError(f"{t.name}: lingua export needs neural output, this was made by {rows.meta.compressor}")
            coder = CoderConfig(**rows.meta.coder)
            mine = _settings(coder, spec, t.name) + (coder.window_bits,)
            if settings not in (None, mine):
                raise SettingsError(f"{t.name}: coder settings {mine} differ from the other shards' {settings}")
            settings = mine
            for i in range(len(rows)):
                where = f"{t.name} row {i} (input row {rows.source_row[i]})"
                raw = rows.raw[i]
                if raw is None:
                    raise SettingsError(f"{where}: raw text was not stored (output_format.store_raw: false); the trainer needs it")
                if coder.window_bits == 8 and 0 in rows.get("window_bytes", i):
                    # The paper's format has no compressed value that stands for "one raw byte".
                    raise SettingsError(f"{where}: W = 8 escape windows (raw bytes the coder could not fit "
                                     "in a window) have no representation in the lingua format")
                field = document_field(rows.get("symbols", i), rows.get("seg_symbol_offsets", i),
                                       rows.get("seg_window_offsets", i), coder)
                chunk, order = _place(spec.seed, t.name, i, spec.chunks)
                line = json.dumps({"text": raw.decode("utf-8"), settings[0]: field}, ensure_ascii=False)
                parts[chunk].write(f"{order:020d}\t{line}\n")
                docs += 1
            shards += 1
            log(f"{t.name}: {len(rows)} documents")
    finally:
        for p in parts:
            p.close()
    counts = []
    for c in range(spec.chunks):  # one chunk in memory at a time
        part = os.path.join(work, f"part.{c:02d}")
        with open(part, encoding="utf-8") as f:
            lines = sorted(f)
        with open(os.path.join(work, f"{spec.name}.chunk.{c:02d}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(line.split("\t", 1)[1] for line in lines)
        os.remove(part)
        counts.append(len(lines))
    key, pack, W = settings or (spec.key or "m1_ac_ow16", spec.pack or 16, 16)
    summary = {"shards": shards, "documents": docs, "chunks": spec.chunks, "docs_per_chunk": counts,
               "seed": spec.seed, "dir": final,
               "trainer": {"data.root_dir": dest, "data.sources": {spec.name: 1.0},
                           "data.compression_alg_config": f"ac_m1_key-pack_{pack}-{key}",
                           "world_size": f"a multiple of {spec.chunks}"}}
    with open(os.path.join(work, "export.json"), "w") as f:
        json.dump(summary, f, indent=1)
    # Replace the whole directory: chunk files of an earlier export with more chunks
    # would otherwise be globbed by the trainer along with the new ones.
    old = final + ".export-old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.rename(final, old)
    os.rename(work, final)
    shutil.rmtree(old, ignore_errors=True)
    return summary
