"""int8 outputs are the same bytes whatever kernels compute them: processes that switch
the CPU kernels torch, oneDNN and MKL use (as other CPUs would choose) make identical
int8 outputs in any engine shape and thread count, and verify each other's; float
outputs under the same switches differ (so this test can fail)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.procs import env

SWITCHES = {  # name: environment, and whether the float modes run there too
    "default": ({}, True),
    # No VNNI: oneDNN's int8 GEMM goes through saturating int16 pairs.
    "avx2-everywhere": ({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, False),
    "sse-everywhere": ({"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, True),
}


def probe(name: str, *args: str) -> dict:
    switch, floats = SWITCHES[name]
    res = subprocess.run([sys.executable, "-m", "tests.numerics_probe", *args, *(["--floats"] if floats else [])],
                         env=env(**switch), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_int8_outputs_are_identical_under_every_kernel_choice(tmp_path):
    made = tmp_path / "records.pkl"
    first = probe("default", "--save", str(made))
    others = list(SWITCHES)[1:]
    with ThreadPoolExecutor(2) as pool:  # two at a time: the CI machine has two cores
        results = {"default": first, **dict(zip(others, pool.map(lambda n: probe(n, "--verify", str(made)), others)))}
    int8 = {(name, run): r[run] for name, r in results.items() for run in ("int8", "int8_group16_threads1")}
    assert len(set(int8.values())) == 1, int8
    verified = {n: results[n]["verified_other"] for n in others}
    assert all(all(v) for v in verified.values()), verified
    # The same switches change float results (fp32 or bf16): the check above can fail.
    floats = {run: {results[n][run] for n in results if run in results[n]} for run in ("fp32", "bf16")}
    assert len(floats["fp32"]) > 1 or len(floats["bf16"]) > 1, floats
