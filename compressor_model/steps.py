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
import time

import numpy as np
import torch

from coder.quantize import coding_ints, quantize

from . import intmath
from .intmodel import IntByteLM
from .model import ByteLM
from .numerics import Precision, autocast
from .runner import Layer
from .segment import row_entropy

Model = ByteLM | IntByteLM  # a float model runs in autocast; the integer model is int8 throughout


# -- what both kinds of model give the coder ------------------------------------------

def new_cache(model: Model, lanes: int, length: int, precision: Precision):
    if precision is Precision.INT8:
        return model.new_cache(lanes, length)
    return model.new_cache(lanes, length, dtype=torch.bfloat16 if precision is Precision.BF16 else torch.float32)


def frequency_rows(model: Model, logits: torch.Tensor, precision: Precision) -> torch.Tensor:
    """Logits -> the coder's frequency rows (int, [..., 256], each summing to 2**16)."""
    if precision is Precision.INT8:
        return model.frequencies(logits)
    return quantize(torch.softmax(logits.float(), -1))


def target_ints(model: Model, logits: torch.Tensor, targets: torch.Tensor, precision: Precision):
    """(cumulative frequency, frequency) of each target byte, int32."""
    if precision is Precision.INT8:
        return intmath.coding_ints(model.frequencies(logits), targets)
    return coding_ints(torch.softmax(logits.float(), -1), targets)


def entropy_rows(model: Model, x: torch.Tensor, precision: Precision) -> torch.Tensor:
    """[rows, T] BOS + bytes -> float32 [rows, T] next-byte entropies in bits."""
    if precision is Precision.INT8:
        return model.entropy_bits(model(x))
    return row_entropy(model, x)


class StepMode(enum.Enum):
    ENCODE = "encode"  # results: (cumulative frequency, frequency) of each lane's target byte
    DECODE = "decode"  # results: each lane's whole frequency row, for the decoder


class LaneSteps:
    """Model steps for `len(kv) * group` lanes in `sets` contiguous sets.

    inp.np[:, 0/1/2] are the lanes' token, slot and target byte (the coder kernels write
    them in place); out.np holds the results: [lanes, 2] (cum, freq) or [lanes, 256].
    """

    def __init__(self, model: Model, kv: list, group: int, sets: int, layer: Layer,
                 precision: Precision, mode: StepMode):
        self.group, self.mode = group, mode
        lanes = len(kv) * group
        per_set = lanes // sets
        self.sets = [(s * per_set, (s + 1) * per_set) for s in range(sets)]
        self.inp = layer.mirror((lanes, 3), torch.int64)  # lane-major: a set's rows are one block
        self.out = layer.mirror((lanes, 2) if mode is StepMode.ENCODE else (lanes, 256), torch.int32)
        rows = [slice(k * group, (k + 1) * group) for k in range(len(kv))]
        # The calls hold what they compute with, not this object: no reference cycle, so
        # a dropped compressor frees its buffers and graphs at once, not at some later
        # garbage collection (which could fall inside another compressor's capture).
        self.calls = [layer.static(_step_fn(model, kv[k], self.inp.dev[r], self.out.dev[r], layer.device, precision, mode))
                      for k, r in enumerate(rows)]
        self.done = [layer.completion() for _ in self.sets]
        self.seconds = 0.0  # host time spent launching and waiting for device work

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

    def warm_up(self) -> None:
        """Run every group's call once (capturing its graph on CUDA) on idle inputs: BOS
        context, slot 1. The KV cache rows this writes are written again before any
        window reads them (slot n is written by the step that feeds the window's n-th
        byte)."""
        self.inp.np[:] = (0, 1, 0)
        waiting = np.ones(self.inp.np.shape[0], np.bool_)
        for s in range(len(self.sets)):
            self.launch(s, waiting)
            self.wait(s)


def _step_fn(model: Model, kv, x: torch.Tensor, out: torch.Tensor, device: torch.device,
             precision: Precision, mode: StepMode):
    """One group's step: x [G, 3] (token, slot, target) -> out [G, 2] or [G, 256]."""
    def step() -> None:
        with autocast(device, precision):
            logits = model.step(x[:, 0], x[:, 1], kv)  # [G, 256]
        if mode is StepMode.ENCODE:
            cum, freq = target_ints(model, logits, x[:, 2], precision)
            out[:, 0] = cum
            out[:, 1] = freq
        else:
            out.copy_(frequency_rows(model, logits, precision))

    return step


class EntropyRows:
    """`segment.entropies`' forward: int64 [rows, T] -> float32 [rows, T] entropies, one
    static call per shape. The returned array is reused by the next call of its shape."""

    def __init__(self, model: Model, layer: Layer, precision: Precision):
        self.model, self.layer, self.precision = model, layer, precision
        self.calls: dict[tuple, tuple] = {}
        self.seconds = 0.0

    def _call(self, shape: tuple) -> tuple:
        if shape not in self.calls:
            x, h = self.layer.mirror(shape, torch.int64), self.layer.mirror(shape, torch.float32)
            fn = _entropy_fn(self.model, x.dev, h.dev, self.layer.device, self.precision)
            self.calls[shape] = (x, h, self.layer.static(fn), self.layer.completion())
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


def _entropy_fn(model: Model, x: torch.Tensor, h: torch.Tensor, device: torch.device, precision: Precision):
    def rows() -> None:
        with autocast(device, precision):
            h.copy_(entropy_rows(model, x, precision))

    return rows
