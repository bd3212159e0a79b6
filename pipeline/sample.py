"""Real code as data: shards made from the interpreter's own standard library sources.

Every machine with Python has them, so the demo, the tests and the benchmarks run on
real code without downloading anything. Files are split deterministically into a
training part and a held-out part (by a hash of their path), so a model trained on
one can be measured on the other.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

HELDOUT_EVERY = 20  # one file in 20 is held out


@dataclass
class SourceFile:
    path: str  # relative to the stdlib root
    text: str


def split_of(rel_path: str) -> str:
    h = int.from_bytes(hashlib.sha256(rel_path.encode()).digest()[:4], "little")
    return "heldout" if h % HELDOUT_EVERY == 0 else "train"


def stdlib_files(split: str | None = None, root: str | None = None) -> list[SourceFile]:
    """UTF-8 .py files of the standard library (site-packages excluded), sorted by path."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).as_posix()
        if "site-packages" in rel or (split and split_of(rel) != split):
            continue
        try:
            text = p.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a few test files are deliberately not UTF-8
        if text:
            out.append(SourceFile(rel, text))
    return out


def take_bytes(files: list[SourceFile], max_bytes: int) -> list[SourceFile]:
    out, total = [], 0
    for f in files:
        n = len(f.text.encode())
        if max_bytes and total + n > max_bytes:
            continue
        out.append(f)
        total += n
    return out


def write_shards(files: list[SourceFile], out_dir: str | Path, n_shards: int, fmt: str = "jsonl.zst") -> list[Path]:
    """Round-robin the files into n_shards shard files named part-00000.<fmt>."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = [files[i::n_shards] for i in range(n_shards)]
    paths = []
    for i, group in enumerate(groups):
        path = out_dir / f"part-{i:05d}.{fmt}"
        rows = [{"id": f.path, "content": f.text, "path": f.path} for f in group]
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            raw = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
            path.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw) if fmt.endswith("zst") else raw)
        paths.append(path)
    return paths


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Write stdlib source shards (real code) for demos and tests.")
    ap.add_argument("--output", required=True)
    ap.add_argument("--split", choices=["train", "heldout", "all"], default="heldout")
    ap.add_argument("--max-bytes", type=int, default=0, help="stop adding files past this many bytes (0: all)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--format", choices=["jsonl", "jsonl.zst", "parquet"], default="jsonl.zst")
    a = ap.parse_args(argv)
    files = take_bytes(stdlib_files(None if a.split == "all" else a.split), a.max_bytes)
    paths = write_shards(files, a.output, a.shards, a.format)
    total = sum(len(f.text.encode()) for f in files)
    print(json.dumps({"files": len(files), "bytes": total, "shards": [str(p) for p in paths]}))


if __name__ == "__main__":
    main()
