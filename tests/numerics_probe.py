"""One process's view of the numerics, for tests/e2e/test_numerics_anywhere.py: run under
kernel-switching environment variables (set before torch starts), it compresses a
fixed piece of real code with the shipped model and prints a digest of everything an
output holds (symbols, segment offsets, window byte counts, thresholds) for int8 in
two engine shapes and thread counts, and for fp32 and bf16; it can save its int8
records, or verify records another process made.

    python -m tests.numerics_probe [--save FILE] [--verify FILE] [--floats]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle

import torch

from compressor_model.config import EngineConfig, Precision, SegmentConfig
from compressor_model.engine import NeuralCompressor
from tests.engine_fixtures import code_docs

DOCS = [d[:400] for d in code_docs(3)]
RUNS = {  # name: precision, engine shape, torch threads
    "int8": (Precision.INT8, dict(lanes=32, group=32), 2),
    "int8_group16_threads1": (Precision.INT8, dict(lanes=64, group=16), 1),
    "fp32": (Precision.FP32, dict(lanes=32, group=32), 2),
    "bf16": (Precision.BF16, dict(lanes=32, group=32), 2),
}


def digest(records, th) -> str:
    h = hashlib.sha256(json.dumps([th.theta_abs, th.theta_jump]).encode())
    for r in records:
        for a in (r.symbols, r.seg_off, r.win_off, r.window_counts, r.window_codes):
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--save")
    ap.add_argument("--verify")
    ap.add_argument("--floats", action="store_true", help="also fp32 and bf16")
    a = ap.parse_args()
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for name, (precision, shape, threads) in RUNS.items():
        if precision.is_float and not a.floats:
            continue
        torch.set_num_threads(threads)
        # Calls of 1024 positions (4 rows of the 256-byte block): a short sample pads less.
        comp = NeuralCompressor.load(None, EngineConfig(precision=precision, device="cpu", compile=False, **shape),
                                     SegmentConfig(call_positions=1024))
        th = comp.calibrate(DOCS)
        records = comp.compress(DOCS, th)
        out[name] = digest(records, th)
        if name == "int8" and a.save:
            with open(a.save, "wb") as f:
                pickle.dump(records, f)
        if name == "int8" and a.verify:
            with open(a.verify, "rb") as f:
                out["verified_other"] = comp.verify(pickle.load(f), DOCS)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
