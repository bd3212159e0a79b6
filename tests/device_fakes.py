"""A CPU stand-in for what a GPU would show of the engine's host/device ordering.

`DeferredLayer` is a `compressor_model.runner.Layer` whose copies and calls are queued
and run only when a Completion is waited on, the way a CUDA stream runs them later
than the host queued them. A host-to-device copy reads the host buffer when it runs,
so a buffer the host rewrites while its copy is in flight sends the new bytes; a
device-to-host copy poisons its host rows at once and fills them only when it runs,
so a host that reads results before waiting reads poison. Either mistake changes the
coded bits, which the tests compare with the plain CPU engine's.

`checking_capture` stands in for a CUDA graph capture: it runs the function once under
`NoHostSync`, which fails on what a captured function must not do (read a value back
to the host, or build a tensor from host data: a graph would replay the stale copy),
and returns the function as its replay. `failing_capture` raises, as a capture can.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from compressor_model.runner import Mirror, StaticCall

aten = torch.ops.aten
POISON = -0x5A5A5A5A  # what an unwaited result reads as (fits int32 and float32 rows)


class DeferredLayer:
    def __init__(self, capture: Callable | None = None):
        self.device = torch.device("cpu")
        self.capture = capture
        self.queue: list = []  # what the "device" has not run yet, in order
        self.captures = 0

    def run_until(self, marker) -> None:
        while self.queue:
            op = self.queue.pop(0)
            if op is marker:
                return
            if callable(op):
                op()

    def mirror(self, shape: tuple, dtype: torch.dtype) -> Mirror:
        return DeferredMirror(self, torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype))

    def completion(self):
        return DeferredCompletion(self)

    def static(self, fn: Callable[[], None]):
        def counted(f):
            self.captures += 1
            return self.capture(f)

        call = StaticCall(fn, counted if self.capture is not None else None)
        return lambda: self.queue.append(call)


class DeferredMirror(Mirror):
    def __init__(self, layer: DeferredLayer, dev: torch.Tensor, host: torch.Tensor):
        super().__init__(dev, host)
        self.layer = layer

    def to_device(self, index=slice(None)) -> None:
        self.layer.queue.append(lambda: self.dev[index].copy_(self.host[index]))

    def to_host(self, index=slice(None)) -> None:
        self.host[index] = POISON
        self.layer.queue.append(lambda: self.host[index].copy_(self.dev[index]))


class DeferredCompletion:
    def __init__(self, layer: DeferredLayer):
        self.layer, self.marker = layer, None

    def record(self) -> None:
        self.marker = object()
        self.layer.queue.append(self.marker)

    def wait(self) -> None:
        if self.marker is not None and any(op is self.marker for op in self.layer.queue):
            self.layer.run_until(self.marker)


class NoHostSync(TorchDispatchMode):
    """Fails on ops a CUDA-graph-captured function must not run."""

    FORBIDDEN = {aten._local_scalar_dense, aten.nonzero, aten.lift_fresh, aten.lift_fresh_copy}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.FORBIDDEN:
            raise AssertionError(f"a captured call ran {func}: it reads back to the host or builds from host data")
        return func(*args, **(kwargs or {}))


def checking_capture(fn: Callable[[], None]) -> Callable[[], None]:
    with NoHostSync():
        fn()
    return fn


def failing_capture(fn: Callable[[], None]) -> Callable[[], None]:
    raise RuntimeError("operation not permitted when stream is capturing")
