"""Input shards made from the interpreter's own standard library sources
(`compressor_model.stdlib`), for the demo, the tests and the benchmarks:
`python -m pipeline.commands.demo --output DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from compressor_model.stdlib import SourceFile, stdlib_files, take_bytes


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
