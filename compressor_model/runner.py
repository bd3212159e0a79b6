"""Fixed-shape device calls over static buffers, eager or replayed as CUDA graphs.

The coding loop calls the model once per step with tiny inputs (a token and a slot per
lane), so on a GPU launching ~400 small kernels per call, not arithmetic, would set the
speed. Here every call has one fixed shape and reads and writes the same tensors, so on
CUDA it is captured once into a CUDA graph and each step is one replay; inputs arrive
in one host-to-device copy from pinned memory and results leave in one copy back.

A `Layer` is where that happens: its buffers (`Mirror`: a device tensor and its host
copy), its end-of-work markers (`Completion`) and its static calls. `CpuLayer`: the
host tensors are the device tensors and calls run eagerly. `CudaLayer`: pinned host
copies, copies and calls queued on the stream, graphs. Both run the same engine code;
tests plug in a layer that defers copies and poisons buffers in flight
(tests/device_fakes.py), so the host's ordering is checked on a CPU too.

A graph replays the very kernels the eager call ran, so results are bit-identical
(tests/e2e/test_cuda.py checks it where CUDA exists). A capture that fails is not fatal:
that call runs eagerly from then on, with one warning.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Protocol

import torch


class Mirror:
    """A device tensor and its host copy (pinned on CUDA, the same tensor on the CPU);
    `np` is a NumPy view of the host copy, which the Numba kernels read and write.
    Between `to_device`/`to_host` and the wait on the next Completion the copies may be
    in flight: the host must neither rewrite what goes out nor read what comes back."""

    def __init__(self, dev: torch.Tensor, host: torch.Tensor):
        self.dev, self.host = dev, host
        self.np = host.numpy()

    def to_device(self, index=slice(None)) -> None:
        if self.host is not self.dev:
            self.dev[index].copy_(self.host[index], non_blocking=True)

    def to_host(self, index=slice(None)) -> None:
        if self.host is not self.dev:
            self.host[index].copy_(self.dev[index], non_blocking=True)


class Completion(Protocol):
    """Marks the end of the work queued so far; `wait` blocks the host until then."""

    def record(self) -> None: ...

    def wait(self) -> None: ...


Capture = Callable[[Callable[[], None]], Callable[[], None]]  # fn -> replay


class StaticCall:
    """`fn()` computes from static tensors into static tensors. With a `capture`, the
    first call turns it into a replay (a CUDA graph); `fn` must be idempotent, as the
    capture may run it for real on the current inputs. A capture that raises leaves
    the call eager for good, with a warning: the graph is kept only once it exists."""

    def __init__(self, fn: Callable[[], None], capture: Capture | None = None):
        self.fn, self.capture = fn, capture
        self.replay: Callable[[], None] | None = None

    def __call__(self) -> None:
        if self.capture is not None and self.replay is None:
            capture, self.capture = self.capture, None
            try:
                self.replay = capture(self.fn)
            except Exception as e:  # noqa: BLE001 - any capture failure: run eagerly instead
                warnings.warn(f"CUDA graph capture failed, this call runs eagerly: {type(e).__name__}: {e}",
                              RuntimeWarning, stacklevel=2)
        (self.replay or self.fn)()


class Layer(Protocol):
    device: torch.device

    def mirror(self, shape: tuple, dtype: torch.dtype) -> Mirror: ...

    def completion(self) -> Completion: ...

    def static(self, fn: Callable[[], None]) -> Callable[[], None]: ...


class _Done:
    def record(self) -> None:
        pass

    def wait(self) -> None:
        pass


class CpuLayer:
    """Host tensors are the device tensors; calls run when they are made."""

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = device

    def mirror(self, shape: tuple, dtype: torch.dtype) -> Mirror:
        t = torch.zeros(shape, dtype=dtype)
        return Mirror(t, t)

    def completion(self) -> Completion:
        return _Done()

    def static(self, fn: Callable[[], None]) -> StaticCall:
        return StaticCall(fn)


class _CudaEvent:
    def __init__(self):
        self.event = torch.cuda.Event()

    def record(self) -> None:
        self.event.record()

    def wait(self) -> None:
        self.event.synchronize()


@functools.cache
def _warmup_stream(index: int) -> torch.cuda.Stream:
    """One side stream per device for graph warm-ups (each stream gets a cuBLAS
    workspace of its own, so one per call would multiply them)."""
    return torch.cuda.Stream(torch.device("cuda", index))


class CudaLayer:
    """Pinned host copies, async copies and calls on the current stream, CUDA graphs
    (sharing one memory pool) when `graphs`."""

    def __init__(self, device: torch.device, graphs: bool = True):
        self.device = device
        self.pool = torch.cuda.graph_pool_handle() if graphs else None
        self.capture: Capture | None = self._capture if graphs else None

    def mirror(self, shape: tuple, dtype: torch.dtype) -> Mirror:
        return Mirror(torch.zeros(shape, dtype=dtype, device=self.device), torch.zeros(shape, dtype=dtype, pin_memory=True))

    def completion(self) -> Completion:
        return _CudaEvent()

    def static(self, fn: Callable[[], None]) -> StaticCall:
        return StaticCall(fn, self.capture)

    def _capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        side = _warmup_stream(self.device.index if self.device.index is not None else torch.cuda.current_device())
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            fn()
        return graph.replay


def layer_for(device: torch.device, graphs: bool) -> Layer:
    return CudaLayer(device, graphs) if device.type == "cuda" else CpuLayer(device)
