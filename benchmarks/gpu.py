"""`make bench-gpu`: the GPU figures in steps that fit a borrowed machine's limits.

    bash deploy/bench-gpu.sh --out $OUT --steps engine,cuda-tests      # ~3 min on one H100-class GPU
    bash deploy/bench-gpu.sh --out $OUT --steps train,rate,pipeline    # ~4 min
    bash deploy/bench-gpu.sh --device cpu --model tiny --out DIR       # every step on a CPU: checks the wiring

Steps (each its own process: its own CUDA context, and a crash or a hang loses only it):

* `engine`: the engine benchmark (`benchmarks.engine`) with random weights of
  `--model` (speed does not depend on the weights): bytes/s per GPU for segmentation,
  coding and end to end, model TFLOP/s and MFU, CUDA graphs against eager calls
  (speed-up, identical bits), bf16 against fp32;
* `cuda-tests`: tests/e2e/test_cuda.py and tests/unit/test_device_order.py (its lane-position
  test runs paper40m shapes with group 4096 on a GPU);
* `train`: `--train-seconds` of training `--model` on this Python's standard library;
* `rate`: the engine benchmark with that checkpoint: bytes per symbol, held-out
  bits/byte (its speed too, on less data);
* `pipeline`: the Ray job (`benchmarks.job`) with one GPU model actor and that checkpoint.

Each step's JSON goes to `<out>/<step>.json` the moment the step ends, with its exit
status, seconds and the tails of its output and log (the whole log: `<work>/logs/`); a
child's JSON is kept whatever its exit status (a process that crashes at exit still
measured). Every child's timeout comes from one deadline (`--deadline-s`), so a step
that hangs is cut while there is time to write what the others found. `<out>` is the
folder a device run brings back (at most 8 files): it gets one JSON per step and
`summary.json`; checkpoints, data and logs go to `--work`.
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
from pipeline.store.files import write_json_atomic
from pipeline.commands.demo import write_shards

STEPS = ("engine", "cuda-tests", "train", "rate", "pipeline")
LOG_TAIL = 4000  # characters of a step's log in its JSON
# Sizes by device: an H100-class GPU's steps fit the minutes above; a CPU's only check the wiring.
SIZES = {
    "cuda": dict(train_seconds=60.0, engine_bytes=4_000_000, rate_bytes=1_000_000, pipeline_bytes=2_000_000,
                 lanes=8192, group=4096, call_positions=65536, batch_bytes=8 << 20),
    "cpu": dict(train_seconds=10.0, engine_bytes=150_000, rate_bytes=60_000, pipeline_bytes=100_000,
                lanes=256, group=128, call_positions=4096, batch_bytes=64 << 10),
}
# Dense bf16 tensor-core peak (TFLOP/s) by device name, for MFU.
PEAK_BF16_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "A100": 312.0, "L40S": 362.0}


def peak_tflops(device_name: str) -> float:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), 0.0)


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


class Steps:
    """Runs child steps under one deadline and writes each one's JSON when it ends."""

    def __init__(self, out: Path, logs: Path, deadline_s: float, reserve_s: float = 10.0):
        self.out, self.logs, self.reserve = out, logs, reserve_s
        logs.mkdir(parents=True, exist_ok=True)
        self.deadline = time.monotonic() + deadline_s
        self.results: dict[str, dict] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic() - self.reserve

    def run(self, name: str, args: list[str], parse=last_json) -> dict | None:
        log = self.logs / f"{name}.log"
        t = time.perf_counter()
        timeout = self.left()
        status, rc, stdout = "ok", None, ""
        if timeout <= 0:
            status = "skipped: no time left before the deadline"
        else:
            with open(log, "w") as f:
                try:
                    proc = subprocess.run([sys.executable, *args], stdout=subprocess.PIPE, stderr=f, text=True,
                                          timeout=timeout)
                    rc, stdout = proc.returncode, proc.stdout
                    status = "ok" if rc == 0 else f"exit {rc}"
                except subprocess.TimeoutExpired as e:
                    stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
                    status = f"timeout after {timeout:.0f} s"
        result = parse(stdout) if stdout else None
        tail = log.read_text(errors="replace")[-LOG_TAIL:] if log.exists() else ""
        record = {"step": name, "status": status, "exit": rc, "seconds": round(time.perf_counter() - t, 1),
                  "result": result, "log_tail": tail, "stdout_tail": stdout[-LOG_TAIL:]}
        write_json_atomic(str(self.out / f"{name}.json"), record)
        self.results[name] = record
        print(f"bench-gpu: {name}: {status} in {record['seconds']} s", file=sys.stderr, flush=True)
        return result


def pytest_counts(stdout: str) -> dict:
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", stdout)}
    return {"passed": counts.get("passed", 0), "failed": counts.get("failed", 0) + counts.get("error", 0)
            + counts.get("errors", 0), "skipped": counts.get("skipped", 0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default="runs/bench-gpu", help="results folder: one small JSON and log per step")
    ap.add_argument("--work", default="", help="data and checkpoints (default: <out>/../bench-gpu-work)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    ap.add_argument("--deadline-s", type=float, default=540.0, help="every step's timeout comes from this budget")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="paper40m", help="model config: random weights for `engine`, trained by `train`")
    ap.add_argument("--train-seconds", type=float, help="default: 60 on CUDA, 10 on a CPU")
    ap.add_argument("--train-steps", type=int, default=2000, help="the lr schedule's length; time may end it sooner")
    ap.add_argument("--checkpoint", help="for `rate` and `pipeline`: this checkpoint instead of the `train` step's")
    ap.add_argument("--engine-bytes", type=int, help="bytes the `engine` step compresses")
    ap.add_argument("--rate-bytes", type=int, help="bytes the `rate` step compresses")
    ap.add_argument("--pipeline-bytes", type=int, help="bytes the `pipeline` step's job compresses")
    ap.add_argument("--lanes", type=int)
    ap.add_argument("--group", type=int)
    ap.add_argument("--call-positions", type=int)
    ap.add_argument("--batch-bytes", type=int, help="document bytes per model call in the job")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="engine.compile for the engine, rate and pipeline steps (int8 on a CPU)")
    a = ap.parse_args(argv)
    for k, v in SIZES["cuda" if a.device.startswith("cuda") else "cpu"].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    steps = [s for s in a.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"--steps: unknown {unknown}; known: {list(STEPS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else out.resolve().parent / f"{out.name}-work"
    runner = Steps(out, work / "logs", a.deadline_s)
    t0 = time.perf_counter()
    engine_args = ["-m", "benchmarks.engine", "--json", "--device", a.device, "--lanes", str(a.lanes),
                   "--group", str(a.group), "--call-positions", str(a.call_positions), "--split", "all",
                   "--compile" if a.compile else "--no-compile"]

    if "engine" in steps:
        engine = runner.run("engine", [*engine_args, "--model", a.model, "--bytes", str(a.engine_bytes), "--no-verify",
                                    "--compare-bytes", str(a.engine_bytes // 8)])
        if engine and peak_tflops(engine.get("gpu", "")):
            engine["peak_tflops"] = peak_tflops(engine["gpu"])
            engine["mfu"] = engine["model_tflops_per_s"] / engine["peak_tflops"]
            write_json_atomic(str(out / "engine.json"), {**runner.results["engine"], "result": engine})
    if "cuda-tests" in steps:
        runner.run("cuda-tests", ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e/test_cuda.py",
                               "tests/unit/test_device_order.py"], parse=pytest_counts)

    ckpt = a.checkpoint or str(work / "model" / "model.pt")
    if "train" in steps and not a.checkpoint:
        data = work / "data"
        if not (data / "train").exists():
            write_shards(stdlib_files("train"), data / "train", 8, "parquet")
            write_shards(stdlib_files("heldout"), data / "heldout", 1, "parquet")
        runner.run("train", ["-m", "compressor_model.train", "--data", str(data / "train"), "--heldout", str(data / "heldout"),
                          "--model", a.model, "--steps", str(a.train_steps), "--max-seconds", str(a.train_seconds),
                          "--device", a.device, "--eval-every", "1000000", "--ckpt-every", "1000",
                          "--out", str(work / "model")])
    have_ckpt = Path(ckpt).exists()
    for name in ("rate", "pipeline"):
        if name in steps and not have_ckpt:
            runner.results[name] = {"step": name, "status": f"skipped: no checkpoint at {ckpt} (run `train` first)"}
            write_json_atomic(str(out / f"{name}.json"), runner.results[name])
    if "rate" in steps and have_ckpt:
        runner.run("rate", [*engine_args, "--checkpoint", ckpt, "--bytes", str(a.rate_bytes), "--split", "heldout",
                         "--compare-bytes", "0", "--no-compare-graphs"])
    if "pipeline" in steps and have_ckpt:
        sets = [f"engine.lanes={a.lanes}", f"engine.group={a.group}", f"segment.call_positions={a.call_positions}",
                f"run.batch_bytes={a.batch_bytes}", f"engine.compile={str(a.compile).lower()}"]
        if a.device == "cuda":  # one GPU actor with 2 CPUs; shard tasks on the other cores
            sets += ["run.gpus_per_actor=1", "run.cpus_per_actor=2", "run.shard_workers=4", "run.shard_cpus=1"]
        runner.run("pipeline", ["-m", "benchmarks.job", "--json", "--workers", "1", "--bytes", str(a.pipeline_bytes),
                             "--shards", "16", "--split", "all", "--no-compare", "--no-engine", "--checkpoint", ckpt,
                             *[x for s in sets for x in ("--set", s)]])

    summary = {"device": a.device, "model": a.model, "steps": {k: v["status"] for k, v in runner.results.items()},
               "wall_s": round(time.perf_counter() - t0, 1)}
    e = (runner.results.get("engine") or {}).get("result") or {}
    r = (runner.results.get("rate") or {}).get("result") or {}
    p = (runner.results.get("pipeline") or {}).get("result") or {}
    summary.update({k: v for k, v in {
        "gpu": e.get("gpu") or r.get("gpu"), "cpu": e.get("cpu") or r.get("cpu"), "precision": e.get("precision"),
        "bytes_per_s_segmentation": e.get("bytes_per_s_segmentation"), "bytes_per_s_coding": e.get("bytes_per_s_coding"),
        "bytes_per_s_engine": e.get("bytes_per_s"), "gb_per_hour_engine": e.get("gb_per_hour"),
        "model_tflops_per_s": e.get("model_tflops_per_s"), "mfu": e.get("mfu"),
        "graph_speedup": e.get("graph_speedup"), "graph_bit_identical": e.get("graph_bit_identical"),
        "bytes_per_s_bf16": e.get("bytes_per_s_bf16"), "bytes_per_s_fp32": e.get("bytes_per_s_fp32"),
        "bytes_per_symbol": r.get("bytes_per_symbol"), "heldout_bits_per_byte": r.get("heldout_bits_per_byte"),
        "bytes_per_s_pipeline": p.get("bytes_per_s"),
        "cuda_tests": (runner.results.get("cuda-tests") or {}).get("result"),
    }.items() if v is not None})
    write_json_atomic(str(out / "summary.json"), summary)
    print(json.dumps(summary))
    return 0 if all(v["status"] == "ok" for v in runner.results.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main())
