"""End-to-end pipeline benchmark: `python -m benchmarks.job --json`.

Runs the real Ray job (local cluster, shipped model unless `--checkpoint`) over shards
of real code (held-out files of this Python's standard library) once per model-actor
count, and prints one JSON object with bytes/s end to end, the segment cache hit rate
and the compression rate. For scale it first runs the in-process engine on the same
documents with the same settings, thresholds and all of this machine's cores
(`engine_bytes_per_s`): each run's `vs_engine` is how close the Ray job comes to it.
Then it runs the tokenizer and gzip compressors on the same input for bytes per symbol
side by side. `--set section.field=value` changes the job config (a GPU run:
`--set run.gpus_per_actor=1 --set engine.lanes=8192 ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import torch

from compressor_model.config import Thresholds
from compressor_model.engine import NeuralCompressor
from compressor_model.numerics import describe_machine
from compressor_model.stdlib import stdlib_files, take_bytes
from pipeline.config import JobConfig, load_config
from pipeline.job.driver import calibrate_job, run_job
from pipeline.backends.model_actor import read_checkpoint
from pipeline.store.files import read_json
from pipeline.commands.demo import write_shards
from pipeline.job.cluster import init_local_ray


def _config(inp: str, out: str, extra: list[str]) -> JobConfig:
    return load_config(None, [f"input={json.dumps(inp)}", f"output={json.dumps(out)}", "run.address=local",
                              "run.progress=false", *extra])


def engine_rate(cfg: JobConfig, docs: list[bytes], thresholds: Thresholds) -> dict:
    """The in-process engine on the same documents, settings and thresholds, with every
    core of this machine: what the Ray job's model actors could reach at best."""
    comp = NeuralCompressor.load(read_checkpoint(cfg.model.checkpoint), cfg.engine, cfg.segment)
    comp.warm_up()  # every graph captured, kernels compiled, outside the timed call
    comp.compress([d[:300] for d in docs[:4]], thresholds)
    comp.stats = type(comp.stats)()
    t = time.perf_counter()
    comp.compress(docs, thresholds)
    wall = time.perf_counter() - t
    out = {"engine_bytes_per_s": sum(map(len, docs)) / wall, "engine_wall_s": wall, "engine_device": str(comp.device),
           "precision": comp.precision.value, "numerics": comp.numerics, "engine_torch_threads": torch.get_num_threads()}
    del comp
    if torch.cuda.is_available():  # leave the GPU's memory to the job's model actors
        torch.cuda.empty_cache()
    return out


def run(workers: list[int], max_bytes: int, shards: int, split: str, extra: list[str], compare: bool = True,
        engine: bool = True) -> dict:
    import ray

    tmp = tempfile.mkdtemp(prefix="proxycomp-bench-")
    files = take_bytes(stdlib_files(None if split == "all" else split), max_bytes)
    inp = os.path.join(tmp, "in")
    write_shards(files, inp, shards)
    out = {"input_bytes": sum(len(f.text.encode()) for f in files), "input_files": len(files), "shards": shards,
           **describe_machine(), "runs": {}}
    thresholds = os.path.join(tmp, "thresholds.json")
    t = time.perf_counter()
    init_local_ray(logging_level="ERROR")  # one cluster: jobs start their own actors
    out["ray_start_s"] = time.perf_counter() - t
    try:
        # Calibrate once, outside the timed runs; every run then segments identically.
        t = time.perf_counter()
        calibrate_job(_config(inp, tmp, extra), log=lambda m: None)
        out["calibration_s"] = time.perf_counter() - t
        if engine:
            th = Thresholds(**read_json(thresholds, {}))
            out.update(engine_rate(_config(inp, tmp, extra), [f.text.encode() for f in files], th))
        for w in workers:
            dest = os.path.join(tmp, f"out-{w}")
            os.makedirs(dest)
            shutil.copy(thresholds, os.path.join(dest, "thresholds.json"))
            cfg = _config(inp, dest, [f"run.model_actors={w}", f"run.shard_workers={2 * w}", *extra])
            s = run_job(cfg, log=lambda m: None)
            run_ = {
                "model_actors": w,
                "bytes_per_s": s.bytes_in / s.wall_s,
                "bytes_per_s_after_startup": s.bytes_in / (s.wall_s - s.startup_s),
                "gb_per_hour": s.bytes_in / s.wall_s * 3600 / 1e9,
                "wall_s": s.wall_s,
                "startup_s": s.startup_s,
                "model_busy_fraction": s.model_busy_fraction,
                "model_forward_s": s.model_time,
                "shards_done": s.shards_done,
                "docs": s.docs_out,
                "bytes_per_symbol": s.bytes_per_symbol,
                "cache_hit_rate": s.cache_hit_rate,
                "cache_hits": s.cache_hits,
                "segments": s.segments,
                "segments_reused_fraction": s.reused_fraction,
                "distinct_segments_looked_up": s.unique_segments,
            }
            if engine:
                run_["vs_engine"] = run_["bytes_per_s"] / out["engine_bytes_per_s"]
            out["runs"][str(w)] = run_
        if compare:
            out["bytes_per_symbol_by_compressor"] = _compare(tmp, inp, thresholds, extra)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    first = out["runs"][str(workers[0])]
    for w in workers:
        out[f"bytes_per_s_{w}_workers"] = out["runs"][str(w)]["bytes_per_s"]
    for k in ("bytes_per_s", "vs_engine", "cache_hit_rate", "segments_reused_fraction", "bytes_per_symbol"):
        if k in first:
            out[k] = first[k]
    return out


def _compare(tmp: str, inp: str, thresholds: str | None, extra: list[str]) -> dict:
    """Same input, every proxy compressor: raw bytes per symbol side by side. The
    tokenizer is trained on the standard library's training split, not on the input."""
    from .compressors import train_tokenizer

    tok = os.path.join(tmp, "tokenizer.json")
    with open(tok, "w") as f:
        f.write(train_tokenizer([x.text for x in take_bytes(stdlib_files("train"), 5_000_000)], 32000).to_str())
    rates = {}
    for comp in ("neural", "tokenizer", "gzip"):
        dest = os.path.join(tmp, f"cmp-{comp}")
        os.makedirs(dest)
        if thresholds:
            shutil.copy(thresholds, os.path.join(dest, "thresholds.json"))
        cfg = _config(inp, dest, [*extra, f"model.compressor={comp}", f"model.tokenizer={json.dumps(tok)}"])
        rates[comp] = run_job(cfg, log=lambda m: None).bytes_per_symbol
    return rates


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workers", default="1,2", help="model actor counts to run, comma-separated")
    ap.add_argument("--bytes", type=int, default=600_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--split", choices=["heldout", "train", "all"], default="heldout")
    ap.add_argument("--checkpoint", help="compressor checkpoint (default: the shipped one)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="job config override")
    ap.add_argument("--no-compare", action="store_true", help="skip the tokenizer / gzip comparison")
    ap.add_argument("--no-engine", action="store_true", help="skip the in-process engine run")
    a = ap.parse_args(argv)
    extra = ([f"model.checkpoint={json.dumps(a.checkpoint)}"] if a.checkpoint else []) + a.set
    res = run([int(w) for w in a.workers.split(",")], a.bytes, a.shards, a.split, extra, not a.no_compare, not a.no_engine)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
