"""End-to-end pipeline benchmark: `python -m pipeline.bench --json`.

Runs the real Ray job (local cluster, shipped model) over shards of real code (held-out
files of this Python's standard library) once per worker count, and prints one JSON
object with bytes/s end to end, the segment cache hit rate and the compression rate;
then runs the tokenizer and gzip compressors on the same input for bytes per symbol
side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from .config import load_config
from .job import calibrate_job, run_job
from .sample import stdlib_files, take_bytes, write_shards


def run(workers: list[int], max_bytes: int, shards: int, split: str, compare: bool = True) -> dict:
    import ray

    tmp = tempfile.mkdtemp(prefix="proxycomp-bench-")
    files = take_bytes(stdlib_files(None if split == "all" else split), max_bytes)
    write_shards(files, os.path.join(tmp, "in"), shards)
    out = {"input_bytes": sum(len(f.text.encode()) for f in files), "input_files": len(files), "shards": shards,
           "cpus": os.cpu_count(), "runs": {}}
    thresholds = os.path.join(tmp, "thresholds.json")
    try:
        # Calibrate once, outside the timed runs; every run then segments identically.
        ray.init(address="local", include_dashboard=False, logging_level="ERROR")
        try:
            t = time.perf_counter()
            cal = load_config(None, [f"input={json.dumps(os.path.join(tmp, 'in'))}", f"output={json.dumps(tmp)}",
                                     "run.address=local", "run.progress=false"])
            calibrate_job(cal, log=lambda m: None)
            out["calibration_s"] = time.perf_counter() - t
        finally:
            ray.shutdown()
        for w in workers:
            dest = os.path.join(tmp, f"out-{w}")
            os.makedirs(dest)
            shutil.copy(thresholds, os.path.join(dest, "thresholds.json"))
            cfg = load_config(None, [
                f"input={json.dumps(os.path.join(tmp, 'in'))}", f"output={json.dumps(dest)}", "run.address=local",
                "run.progress=false", f"run.model_actors={w}", f"run.shard_workers={2 * w}",
                # leave room for the shard tasks next to the model actors on this machine
                f"run.cpus_per_actor={(os.cpu_count() or 2) * 0.75 / w}", "run.shard_cpus=0.2",
            ])
            t = time.perf_counter()
            ray.init(address="local", include_dashboard=False, logging_level="ERROR")
            startup = time.perf_counter() - t
            try:
                s = run_job(cfg, log=lambda m: None)
            finally:
                ray.shutdown()
            out["runs"][str(w)] = {
                "model_actors": w,
                "bytes_per_s": s.bytes_in / s.wall_s,
                "bytes_per_s_after_startup": s.bytes_in / (s.wall_s - s.startup_s),
                "wall_s": s.wall_s,
                "startup_s": s.startup_s,
                "model_busy_fraction": s.model_busy_fraction,
                "model_forward_s": s.model_forward_s,
                "ray_start_s": startup,
                "shards_done": s.shards_done,
                "docs": s.docs_out,
                "bytes_per_symbol": s.bytes_per_symbol,
                "cache_hit_rate": s.cache_hit_rate,
                "cache_hits": s.cache_hits,
                "segments": s.segments,
                "segments_reused_fraction": s.reused_fraction,
                "distinct_segments_looked_up": s.unique_segments,
            }
        if compare:
            out["bytes_per_symbol_by_compressor"] = _compare(tmp, thresholds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for w in workers:
        out[f"bytes_per_s_{w}_workers"] = out["runs"][str(w)]["bytes_per_s"]
    out["cache_hit_rate"] = out["runs"][str(workers[0])]["cache_hit_rate"]
    out["segments_reused_fraction"] = out["runs"][str(workers[0])]["segments_reused_fraction"]
    out["bytes_per_symbol"] = out["runs"][str(workers[0])]["bytes_per_symbol"]
    return out


def _compare(tmp: str, thresholds: str | None) -> dict:
    """Same input, every proxy compressor: raw bytes per symbol side by side. The
    tokenizer is trained on the standard library's training split, not on the input."""
    import ray

    from .compressors import train_tokenizer

    tok = os.path.join(tmp, "tokenizer.json")
    with open(tok, "w") as f:
        f.write(train_tokenizer([x.text for x in take_bytes(stdlib_files("train"), 5_000_000)], 32000).to_str())
    rates = {}
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    try:
        for comp in ("neural", "tokenizer", "gzip"):
            dest = os.path.join(tmp, f"cmp-{comp}")
            os.makedirs(dest)
            if thresholds:
                shutil.copy(thresholds, os.path.join(dest, "thresholds.json"))
            cfg = load_config(None, [f"input={json.dumps(os.path.join(tmp, 'in'))}", f"output={json.dumps(dest)}",
                                     "run.address=local", "run.progress=false", f"model.compressor={comp}",
                                     f"model.tokenizer={json.dumps(tok)}"])
            rates[comp] = run_job(cfg, log=lambda m: None).bytes_per_symbol
    finally:
        ray.shutdown()
    return rates


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workers", default="1,2", help="model actor counts to run, comma-separated")
    ap.add_argument("--bytes", type=int, default=600_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--split", choices=["heldout", "train", "all"], default="heldout")
    ap.add_argument("--no-compare", action="store_true", help="skip the tokenizer / gzip comparison")
    a = ap.parse_args(argv)
    res = run([int(w) for w in a.workers.split(",")], a.bytes, a.shards, a.split, not a.no_compare)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
