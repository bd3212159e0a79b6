"""Fixed-shape device calls over static buffers, eager or replayed as CUDA graphs.

The coding loop calls the model once per step with tiny inputs (a token and a slot per
lane), so on a GPU launching ~400 small kernels per call, not arithmetic, would set the
speed. Here every call has one fixed shape and reads and writes the same tensors, so on
CUDA it is captured once into a CUDA graph and each step is one replay; inputs arrive
in one host-to-device copy from pinned memory and results leave in one copy back.
On the CPU the "device" tensors are the host tensors and calls run eagerly.

A graph replays the very kernels the eager call ran, so results are bit-identical
(tests/test_cuda.py checks it where CUDA exists).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Mirror:
    """A device tensor and its host copy (pinned on CUDA, the same tensor on the CPU);
    `np` is a NumPy view of the host copy, which the Numba kernels read and write."""

    def __init__(self, shape: tuple, dtype: torch.dtype, device: torch.device):
        self.dev = torch.zeros(shape, dtype=dtype, device=device)
        self.host = self.dev if device.type == "cpu" else torch.zeros(shape, dtype=dtype, pin_memory=True)
        self.np = self.host.numpy()

    def to_device(self, index=slice(None)) -> None:
        if self.host is not self.dev:
            self.dev[index].copy_(self.host[index], non_blocking=True)

    def to_host(self, index=slice(None)) -> None:
        if self.host is not self.dev:
            self.host[index].copy_(self.dev[index], non_blocking=True)


class StaticCall:
    """`fn()` computes from static tensors into static tensors. On CUDA with graphs on,
    the first call warms it up on a side stream, captures it, and every call replays it.
    `fn` must be idempotent (the warm-up runs it for real on the current inputs)."""

    def __init__(self, fn: Callable[[], None], device: torch.device, graphs: bool, pool=None):
        self.fn, self.pool = fn, pool
        self.graph: torch.cuda.CUDAGraph | None = None
        self.use_graph = graphs and device.type == "cuda"

    def __call__(self) -> None:
        if not self.use_graph:
            self.fn()
            return
        if self.graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.fn()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=self.pool):
                self.fn()
        self.graph.replay()


class Completion:
    """Marks the end of work queued on the device; `wait` blocks the host until then."""

    def __init__(self, device: torch.device):
        self.event = torch.cuda.Event() if device.type == "cuda" else None

    def record(self) -> None:
        if self.event is not None:
            self.event.record()

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()
