"""A warm segment cache on the next slice of a corpus: `python -m benchmarks.warm_cache --json`.

Two disjoint slices of real code (held-out files of this Python's standard library).
Slice A runs first and keeps its hottest cache entries (`<output>/_cache/`). Slice B then
runs twice with the same thresholds, each on a fresh local cluster: cold, and warm from
A's entries (`cache.warm_from`). Prints the hit rates (distinct segments found in the
cache), the share of segments not coded, bytes/s, and whether B's outputs are the same
bytes both ways. One JSON object, machine included.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import ray

from compressor_model.numerics import describe_machine
from compressor_model.stdlib import stdlib_files, take_bytes
from pipeline.config import load_config
from pipeline.job.driver import calibrate_job, run_job
from pipeline.commands.demo import write_shards
from pipeline.job.cluster import init_local_ray


def _digests(out: str) -> dict:
    d = os.path.join(out, "shards")
    return {n: hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest() for n in sorted(os.listdir(d))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slice-bytes", type=int, default=150_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    files = take_bytes(stdlib_files("heldout"), 2 * a.slice_bytes)
    half = next(i for i in range(len(files)) if sum(len(f.text.encode()) for f in files[: i + 1]) >= a.slice_bytes) + 1
    tmp = tempfile.mkdtemp(prefix="proxycomp-bench-cache-")
    try:
        for name, part in (("a", files[:half]), ("b", files[half:])):
            write_shards(part, os.path.join(tmp, f"in-{name}"), a.shards)

        def cfg(inp: str, out: str, *extra: str):
            return load_config(None, [f"input={json.dumps(os.path.join(tmp, inp))}",
                                      f"output={json.dumps(os.path.join(tmp, out))}", "run.address=local",
                                      "run.progress=false", "run.metrics=false", *extra])

        def job(c, calibrate: bool = False):
            init_local_ray(logging_level="ERROR")
            try:
                if calibrate:
                    calibrate_job(c, log=lambda m: None)
                return run_job(c, log=lambda m: None)
            finally:
                ray.shutdown()

        first = job(cfg("in-a", "out-a"), calibrate=True)
        with open(os.path.join(tmp, "out-a", "thresholds.json")) as f:
            first_th = json.load(f)
        runs = {}
        for kind, extra in (("cold", ()), ("warm", (f"cache.warm_from={json.dumps(os.path.join(tmp, 'out-a', '_cache'))}",))):
            os.makedirs(os.path.join(tmp, f"out-b-{kind}"))
            shutil.copy(os.path.join(tmp, "out-a", "thresholds.json"), os.path.join(tmp, f"out-b-{kind}", "thresholds.json"))
            s = job(cfg("in-b", f"out-b-{kind}", *extra))
            runs[kind] = {"cache_hit_rate": round(s.cache_hit_rate, 4), "segments_not_coded": round(s.reused_fraction, 4),
                          "entries_loaded": s.cache_loaded.get("entries", 0), "bytes_per_s": round(s.bytes_in / s.wall_s, 1),
                          "bytes_in": s.bytes_in, "distinct_segments_looked_up": s.unique_segments, "cache_hits": s.cache_hits}
        out = {"bench": "warm_cache", "slice_a_bytes": first.bytes_in, "slice_b_bytes": runs["cold"]["bytes_in"],
               "kept_by_a": first.cache_kept, "a_cache_hit_rate": round(first.cache_hit_rate, 4),
               "calibration_a": {k: first_th[k] for k in ("sample_bytes", "sample_docs", "sample_shards", "sample_seconds")},
               **runs,
               "same_bytes_warm_and_cold": _digests(os.path.join(tmp, "out-b-cold")) == _digests(os.path.join(tmp, "out-b-warm")),
               "machine": describe_machine()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out) if a.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
