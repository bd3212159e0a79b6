"""Load and memory figures: `python -m benchmarks.load --json`.

1. Many small shards: the same documents as N shards and as one shard; the difference
   in wall time over N is the overhead a shard costs (scheduling, commit, markers).
2. Peak memory (RSS) of the shard worker and the model actor on a single 50 MB document
   and on a shard of 100,000 tiny documents, against run.worker_memory_bytes.

The memory runs use a small random-weight model (memory depends on the data, not the
weights) with wide batches so that they finish in minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

import torch

from compressor_model.model import CONFIGS, ByteLM
from compressor_model.stdlib import stdlib_files
from pipeline.job.cluster import init_local_ray
from pipeline.config import load_config
from pipeline.job.driver import run_job
from pipeline.store.files import read_json


def _job(inp: str, out: str, *extra: str):
    return load_config(None, [f"input={json.dumps(inp)}", f"output={json.dumps(out)}", "run.progress=false", *extra])


def _run(cfg):
    import ray

    init_local_ray(logging_level="ERROR")
    try:
        t = time.perf_counter()
        s = run_job(cfg, log=lambda m: None)
        return s, time.perf_counter() - t
    finally:
        ray.shutdown()


def many_shards(tmp: str, n: int) -> dict:
    snippets = [f.text.encode()[:400] for f in stdlib_files("heldout")]
    docs = [snippets[i % len(snippets)].decode("utf-8", "ignore") + f"\n# {i}\n" for i in range(2 * n)]
    for name, groups in (("many", [docs[2 * i : 2 * i + 2] for i in range(n)]), ("one", [docs])):
        d = os.path.join(tmp, f"in-{name}")
        os.makedirs(d)
        for i, g in enumerate(groups):
            with open(os.path.join(d, f"s{i:05d}.jsonl"), "w") as f:
                f.write("".join(json.dumps({"content": x}) + "\n" for x in g))
    extra = ["run.shard_workers=4", "run.shard_cpus=0.25", "run.cpus_per_actor=1"]
    s1, w1 = _run(_job(os.path.join(tmp, "in-one"), os.path.join(tmp, "out-one"), *extra))
    th = os.path.join(tmp, "out-one", "thresholds.json")
    os.makedirs(os.path.join(tmp, "out-many"))
    shutil.copy(th, os.path.join(tmp, "out-many", "thresholds.json"))  # same segmentation, no recalibration
    sn, wn = _run(_job(os.path.join(tmp, "in-many"), os.path.join(tmp, "out-many"), *extra))
    assert sn.shards_done == n and s1.shards_done == 1 and sn.symbols_out == s1.symbols_out
    return {
        "shards": n,
        "docs": sn.docs_out,
        "bytes": sn.bytes_in,
        "wall_s_as_one_shard": w1 - s1.startup_s,
        "wall_s_as_many_shards": wn - sn.startup_s,
        "overhead_s_per_shard": ((wn - sn.startup_s) - (w1 - s1.startup_s)) / (n - 1),
        "same_symbols": sn.symbols_out == s1.symbols_out,
    }


def memory(tmp: str, name: str, lines: list[str], bound: int) -> dict:
    d = os.path.join(tmp, f"in-{name}")
    os.makedirs(d)
    with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
        f.writelines(lines)
    torch.manual_seed(0)
    ckpt = os.path.join(tmp, "small-random.pt")
    if not os.path.exists(ckpt):
        torch.save(ByteLM(CONFIGS["tiny"]).to_checkpoint(), ckpt)
    out = os.path.join(tmp, f"out-{name}")
    cfg = _job(d, out, f"model.checkpoint={json.dumps(ckpt)}", "engine.lanes=4096", "engine.group=2048",
               "segment.call_positions=65536", f"run.worker_memory_bytes={bound}", "calibration.bytes=2000000",
               "run.torch_threads=2")
    s, wall = _run(cfg)
    stats = read_json(os.path.join(out, "_stats", f"{name}.json"))
    return {
        "docs": s.docs_out,
        "rejects": s.rejects,
        "bytes": s.bytes_in,
        "wall_s": wall,
        "shard_worker_peak_rss_mib": stats["peak_rss_bytes"] / 2**20,
        "shard_worker_maxrss_mib": stats.get("maxrss_bytes", 0) / 2**20,
        "model_actor_maxrss_mib": stats.get("model_maxrss_bytes", 0) / 2**20,
        "bound_mib": bound / 2**20,
        "under_bound": stats["peak_rss_bytes"] < bound and stats.get("maxrss_bytes", 0) < bound,
        "failed": s.failed,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--shards", type=int, default=500)
    ap.add_argument("--tiny-docs", type=int, default=100_000)
    ap.add_argument("--big-doc-mb", type=int, default=50)
    ap.add_argument("--bound-mib", type=int, default=4096)
    ap.add_argument("--skip", default="", help="comma-separated: shards,big,tiny")
    a = ap.parse_args(argv)
    skip = set(a.skip.split(","))
    tmp = tempfile.mkdtemp(prefix="proxycomp-load-")
    res = {"cpus": os.cpu_count()}
    try:
        if "shards" not in skip:
            res["many_small_shards"] = many_shards(tmp, a.shards)
        bound = a.bound_mib << 20
        if "big" not in skip:
            code = "".join(f.text for f in stdlib_files("heldout"))
            text = (code * (a.big_doc_mb * 1_000_000 // len(code) + 1))[: a.big_doc_mb * 1_000_000]
            res["one_50mb_document"] = memory(tmp, "big", [json.dumps({"id": "big", "content": text}) + "\n"], bound)
        if "tiny" not in skip:
            lines = [json.dumps({"id": f"t{i}", "content": f"x{i} = {i}\n"}) + "\n" for i in range(a.tiny_docs)]
            res["tiny_documents"] = memory(tmp, "tiny", lines, bound)
        res["driver_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
