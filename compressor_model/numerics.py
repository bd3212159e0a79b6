"""Which device and number format the model runs in.

Compression defaults to the exact integer model (`Precision.INT8`, `intmodel`): its
results do not depend on the device, kernels, thread count or software versions, so
`numerics` names only the integer format's version. The float modes remain for
comparison and for training, where `Precision.AUTO` picks a float format per process
(`resolve_float`). There bf16 is the right choice on GPUs and on CPUs with native bf16 matrix units (AVX512-BF16,
AMX, Arm BF16), where it runs about 2x faster than fp32; on a CPU without them bf16 is
emulated and was measured 5.6x *slower* than fp32 (docs/architecture.md). So
`Precision.AUTO` (the default, for compression and training) resolves per process:

* CUDA: bf16 when the device has native bf16 (Ampere and later), else fp32;
* CPU: fp32 unless the CPU reports native bf16, and then only if a short probe of
  model-shaped matrix products confirms that bf16 is clearly faster.

For the float modes `numerics` names the device kind, the precision, the group size and
the torch version: a float result depends on all of them. `numerics` keys the segment
cache and stamps every output, so results of different numerics never mix.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import time

import torch
from torch.nn import functional as F

from .config import Precision

# bf16 must beat fp32 by this factor in the probe to be chosen: where bf16 is native
# the measured gain is 1.7-2.5x, so a noisy probe never flips a real decision.
BF16_MIN_SPEEDUP = 1.25
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (cpuinfo flags) and Arm (Features)


def pick_device(name: str = "auto") -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; None where that is not readable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return None


def probe_bf16_speedup(reps: int = 3) -> float:
    """fp32 time / bf16 time of a model-shaped linear layer (512 rows, 256 -> 1024) on
    this CPU with torch's current thread count: ~10 ms where bf16 is native."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(512, 256, generator=g), torch.randn(1024, 256, generator=g)

    def timed(dtype) -> float:
        a, b = x.to(dtype), w.to(dtype)
        F.linear(a, b)  # warm-up: kernel selection, weight packing
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            F.linear(a, b)
            best = min(best, time.perf_counter() - t)
        return best

    return timed(torch.float32) / timed(torch.bfloat16)


@functools.cache
def cpu_prefers_bf16() -> bool:
    """Decided once per process (the probe takes tens of milliseconds)."""
    flags = cpu_flags()
    if flags is not None and not (flags & _BF16_FLAGS):
        return False  # emulated bf16: always slower, no need to measure
    return probe_bf16_speedup() >= BF16_MIN_SPEEDUP


def resolve(precision: Precision) -> Precision:
    """What compression runs in: `auto` is the integer model, on every device."""
    return precision.resolved()


def resolve_float(precision: Precision, device: torch.device) -> Precision:
    """The float format (BF16 or FP32) training runs in on this device."""
    if precision is Precision.INT8:
        raise ValueError("training runs in a float format (auto, bf16 or fp32); int8 is the compressor's inference form")
    if precision is not Precision.AUTO:
        return precision
    if device.type == "cuda":
        # Emulated bf16 (a T4, a V100) counts as supported by default, and is slow.
        return Precision.BF16 if torch.cuda.is_bf16_supported(including_emulation=False) else Precision.FP32
    return Precision.BF16 if cpu_prefers_bf16() else Precision.FP32


def autocast(device: torch.device, precision: Precision):
    """The context model calls run in. The autocast weight cache is off so that a call
    captured into a CUDA graph computes exactly what the same call does eagerly."""
    if precision is not Precision.BF16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def cast_once(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """The model as the engine runs it: for bf16, its Linear weights stored in bf16 (in
    place). Autocast casts an fp32 weight to bf16 in every call, and its weight cache
    must stay off (a call captured into a CUDA graph must compute what the eager call
    does), so each coding step of paper40m re-cast ~49 weights, ~230 MB of traffic; a
    weight stored in bf16 is the very same bits, cast once. Embeddings and LayerNorms
    keep fp32, as autocast runs them in fp32."""
    if precision is Precision.BF16:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.to(torch.bfloat16)
    return model


def device_kind(device: torch.device) -> str:
    """What kernels a result depends on: the GPU model, or the CPU architecture and the
    vector ISA torch dispatches to (AVX2 and AVX512 kernels round differently)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()}-cpu-{torch.backends.cpu.get_cpu_capability()}"


def fix_cuda_math() -> None:
    """Numerics that must not depend on a process's global defaults: no TF32 in fp32
    matrix products (outputs are stamped fp32), no reduced-precision bf16 reductions."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False


def describe_machine(device: torch.device | None = None) -> dict:
    """What every reported figure must carry: the CPU model, its cores and vector ISA,
    whether it has native bf16, and the GPU if one is used."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    flags = cpu_flags()
    out = {"cpu": name, "cpus": os.cpu_count(), "cpu_isa": torch.backends.cpu.get_cpu_capability(),
           "cpu_native_bf16": None if flags is None else bool(flags & _BF16_FLAGS), "torch": torch.__version__}
    if device is not None and device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out
