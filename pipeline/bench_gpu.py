"""`make bench-gpu`: the GPU figures in one command, one JSON object out.

On a machine with a CUDA GPU (deploy/bench-gpu.sh sets up what its python3 lacks):

1. trains the paper's 40M compressor (`paper40m`) for a few minutes with the project's
   training CLI on this Python's standard library;
2. runs the engine benchmark (`compressor_model.bench`) with it on CUDA: bytes/s per GPU
   for segmentation, coding and end to end, model TFLOP/s and MFU, GB/hour, CUDA graphs
   against eager calls (speed-up, identical bits), bf16 against fp32;
3. runs the Ray pipeline (`pipeline.bench`) with one GPU model actor on CUDA;
4. runs the CUDA-only tests (tests/test_cuda.py).

Each step runs in its own process (its own CUDA context and Ray cluster). `--device cpu
--model tiny` runs the same steps on a CPU in a minute, to check the wiring.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from compressor_model.stdlib import stdlib_files

from .sample import write_shards

# Dense bf16 tensor-core peak (TFLOP/s) by device name, for MFU.
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "A100": 312.0, "L40S": 362.0}


def peak_tflops(device_name: str) -> float:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), 0.0)


def _python(args: list[str], log: Path, timeout: float, check: bool = True) -> str:
    """Run `python ARGS` in a child process: stderr to `log`, stdout back (its last line
    is the step's JSON)."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *args], stdout=subprocess.PIPE, stderr=f, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise SystemExit(f"bench-gpu: {' '.join(args[:2])} failed (exit {proc.returncode}) after "
                         f"{time.perf_counter() - t:.0f} s; see {log}\n{proc.stdout[-2000:]}")
    return proc.stdout.strip()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-gpu", help="work directory (data, model, logs)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="paper40m")
    ap.add_argument("--train-seconds", type=float, default=180.0)
    ap.add_argument("--train-steps", type=int, default=6000, help="the lr schedule's length; time may end it sooner")
    ap.add_argument("--checkpoint", help="skip training and use this checkpoint")
    ap.add_argument("--engine-bytes", type=int, default=16_000_000)
    ap.add_argument("--pipeline-bytes", type=int, default=8_000_000)
    ap.add_argument("--lanes", type=int, default=8192)
    ap.add_argument("--group", type=int, default=4096)
    ap.add_argument("--call-positions", type=int, default=65536)
    ap.add_argument("--batch-bytes", type=int, default=8 << 20, help="document bytes per model call in the job")
    a = ap.parse_args(argv)
    out = Path(a.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    result: dict = {"device": a.device, "model": a.model}
    t0 = time.perf_counter()

    ckpt = a.checkpoint
    if not ckpt:
        data = out / "data"
        if not (data / "train").exists():
            write_shards(stdlib_files("train"), data / "train", 8, "parquet")
            write_shards(stdlib_files("heldout"), data / "heldout", 1, "parquet")
        line = _python(["-m", "compressor_model.train", "--data", str(data / "train"), "--heldout", str(data / "heldout"),
                        "--model", a.model, "--steps", str(a.train_steps), "--max-seconds", str(a.train_seconds),
                        "--device", a.device, "--eval-every", "1000000", "--ckpt-every", "1000",
                        "--out", str(out / "model")], out / "logs" / "train.log", a.train_seconds * 3 + 600)
        result["train"] = json.loads(line.splitlines()[-1])
        ckpt = str(out / "model" / "model.pt")

    common = ["--checkpoint", ckpt]
    engine_args = ["-m", "compressor_model.bench", "--json", *common, "--device", a.device, "--lanes", str(a.lanes),
                   "--group", str(a.group), "--call-positions", str(a.call_positions), "--split", "all",
                   "--bytes", str(a.engine_bytes), "--no-verify", "--compare-bytes", str(a.engine_bytes // 8)]
    engine = json.loads(_python(engine_args, out / "logs" / "engine.log", 1800).splitlines()[-1])
    peak = peak_tflops(engine.get("gpu", ""))
    if peak:
        engine["mfu"] = engine["model_tflops_per_s"] / peak
        engine["peak_tflops"] = peak
    result["engine"] = engine

    sets = [f"engine.lanes={a.lanes}", f"engine.group={a.group}", f"segment.call_positions={a.call_positions}",
            f"run.batch_bytes={a.batch_bytes}"]
    if a.device == "cuda":  # one GPU actor with 2 CPUs; shard tasks on the other cores
        sets += ["run.gpus_per_actor=1", "run.cpus_per_actor=2", "run.shard_workers=4", "run.shard_cpus=1"]
    pipe_args = ["-m", "pipeline.bench", "--json", "--workers", "1", "--bytes", str(a.pipeline_bytes), "--shards", "16",
                 "--split", "all", "--no-compare", *common, *[x for s in sets for x in ("--set", s)]]
    result["pipeline"] = json.loads(_python(pipe_args, out / "logs" / "pipeline.log", 1800).splitlines()[-1])

    tests = _python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"], out / "logs" / "tests.log", 900,
                    check=False)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tests)}
    result["cuda_tests"] = {"passed": counts.get("passed", 0), "failed": counts.get("failed", 0) + counts.get("error", 0),
                            "skipped": counts.get("skipped", 0)}

    e, p = result["engine"], result["pipeline"]
    result["summary"] = {
        "gpu": e.get("gpu"), "cpu": e.get("cpu"), "precision": e.get("precision"),
        "bytes_per_s_segmentation": e.get("bytes_per_s_segmentation"),
        "bytes_per_s_coding": e.get("bytes_per_s_coding"),
        "bytes_per_s_engine": e.get("bytes_per_s"),
        "bytes_per_s_pipeline": p.get("bytes_per_s"),
        "gb_per_hour_engine": e.get("gb_per_hour"),
        "gb_per_hour_pipeline": p.get("bytes_per_s", 0) * 3600 / 1e9,
        "model_tflops_per_s": e.get("model_tflops_per_s"), "mfu": e.get("mfu"),
        "graph_speedup": e.get("graph_speedup"), "graph_bit_identical": e.get("graph_bit_identical"),
        "bytes_per_s_bf16": e.get("bytes_per_s_bf16"), "bytes_per_s_fp32": e.get("bytes_per_s_fp32"),
        "cuda_tests": result["cuda_tests"], "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
