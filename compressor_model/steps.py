"""The device side of the engine: fixed-shape model calls on static buffers.

* `LaneSteps`: one model step for a set of coding lanes. The lanes are split into
  groups of `group` rows, each with its own KV cache; a step computes every group of
  the set that has a waiting lane, each as one fixed-shape call (a CUDA graph replay on
  CUDA). Inputs go to the device in one copy per step and results come back in one.
  `launch` returns at once on CUDA, so the host codes one lane set while the device
  computes another.
* `EntropyRows`: segmentation's forward pass, one static call per row shape.
"""

from __future__ import annotations

import enum
import functools
import time

import numpy as np
import torch

from coder.quantize import coding_ints, quantize

from .model import ByteLM, KVCache
from .numerics import Precision, autocast
from .runner import Completion, Mirror, StaticCall
from .segment import row_entropy


class StepMode(enum.Enum):
    ENCODE = "encode"  # results: (cumulative frequency, frequency) of each lane's target byte
    DECODE = "decode"  # results: each lane's whole frequency row, for the decoder


class LaneSteps:
    """Model steps for `len(kv) * group` lanes in `sets` contiguous sets.

    inp.np[:, 0/1/2] are the lanes' token, slot and target byte (the coder kernels write
    them in place); out.np holds the results: [lanes, 2] (cum, freq) or [lanes, 256].
    """

    def __init__(self, model: ByteLM, kv: list[KVCache], group: int, sets: int, device: torch.device,
                 precision: Precision, graphs: bool, pool, mode: StepMode):
        self.model, self.kv, self.group, self.mode = model, kv, group, mode
        self.device, self.precision = device, precision
        lanes = len(kv) * group
        per_set = lanes // sets
        self.sets = [(s * per_set, (s + 1) * per_set) for s in range(sets)]
        self.inp = Mirror((lanes, 3), torch.int64, device)  # lane-major: a set's rows are one block
        self.out = Mirror((lanes, 2) if mode is StepMode.ENCODE else (lanes, 256), torch.int32, device)
        self.calls = [StaticCall(functools.partial(self._step, k), device, graphs, pool) for k in range(len(kv))]
        self.done = [Completion(device) for _ in self.sets]
        self.seconds = 0.0  # host time spent launching and waiting for device work

    def _step(self, k: int) -> None:
        rows = slice(k * self.group, (k + 1) * self.group)
        x = self.inp.dev[rows]  # [G, 3]
        with autocast(self.device, self.precision):
            logits = self.model.step(x[:, 0], x[:, 1], self.kv[k])  # [G, 256]
        probs = torch.softmax(logits.float(), -1)
        if self.mode is StepMode.ENCODE:
            cum, freq = coding_ints(probs, x[:, 2])
            self.out.dev[rows, 0] = cum
            self.out.dev[rows, 1] = freq
        else:
            self.out.dev[rows] = quantize(probs)

    def launch(self, s: int, waiting: np.ndarray) -> int:
        """Queue one step for lane set s: every group with a waiting lane. Returns the
        rows computed (padding included)."""
        t = time.perf_counter()
        lo, hi = self.sets[s]
        busy = np.flatnonzero(waiting[lo:hi].reshape(-1, self.group).any(axis=1)) + lo // self.group
        self.inp.to_device(slice(lo, hi))
        for k in busy:
            self.calls[k]()
        self.out.to_host(slice(lo, hi))
        self.done[s].record()
        self.seconds += time.perf_counter() - t
        return len(busy) * self.group

    def wait(self, s: int) -> None:
        t = time.perf_counter()
        self.done[s].wait()
        self.seconds += time.perf_counter() - t


class EntropyRows:
    """`segment.entropies`' forward: int64 [rows, T] -> float32 [rows, T] entropies, one
    static call per shape. The returned array is reused by the next call of its shape."""

    def __init__(self, model: ByteLM, device: torch.device, precision: Precision, graphs: bool, pool):
        self.model, self.device, self.precision, self.graphs, self.pool = model, device, precision, graphs, pool
        self.calls: dict[tuple, tuple] = {}
        self.seconds = 0.0

    def _call(self, shape: tuple) -> tuple:
        if shape not in self.calls:
            x, h = Mirror(shape, torch.int64, self.device), Mirror(shape, torch.float32, self.device)

            def fn():
                with autocast(self.device, self.precision):
                    h.dev.copy_(row_entropy(self.model, x.dev))

            self.calls[shape] = (x, h, StaticCall(fn, self.device, self.graphs, self.pool), Completion(self.device))
        return self.calls[shape]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        x, h, call, done = self._call(rows.shape)
        x.np[...] = rows
        x.to_device()
        call()
        h.to_host()
        done.record()
        done.wait()
        self.seconds += time.perf_counter() - t
        return h.np
