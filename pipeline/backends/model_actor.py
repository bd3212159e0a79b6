"""The model actor: a `NeuralCompressor` serving segmentation and the windowed coding
loop (whose Numba coder runs in the same process, because every window's probabilities
depend on where the previous window ended). `job.cluster` wraps it with `ray.remote`;
it works in-process too (verify, tests).

torch and the engine are imported when a ModelService is made, not with this module:
Ray imports an actor's class module in every process that holds a handle to it, and
every shard task does; shard workers need neither (about 2 s of start-up and 200 MB
each, seen in their import logs)."""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time

import fsspec
import numpy as np
from ray.util.metrics import Gauge

from coder import Windows
from compressor_model.config import Thresholds
from compressor_model.records import Counts

from ..config import JobConfig
from ..store.parquet import BackendInfo


class ModelService:
    """One request at a time (the Ray actor runs with max_concurrency=1): every call
    works in the compressor's static device buffers and KV caches."""

    def __init__(self, cfg: JobConfig, torch_threads: int = 0, metrics_name: str = ""):
        import torch  # (in the actor's process only: the module's doc)

        from compressor_model.engine import NeuralCompressor
        from compressor_model.numerics import device_kind

        self.busy = BusyGauge(metrics_name) if metrics_name else None
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.comp = NeuralCompressor.load(read_checkpoint(cfg.model.checkpoint, cfg.storage_options),
                                          cfg.engine, cfg.segment)
        self._machine = f"{self.comp.device} {device_kind(self.comp.device)}"

    def info(self) -> BackendInfo:
        c = self.comp
        return BackendInfo(
            "neural", namespace=c.namespace, fingerprint=c.fingerprint, numerics=c.numerics,
            n_symbols=1 << c.cfg.symbol_bits, precision=c.precision.value, training=c.training_info,
            coder={"window_bits": c.cfg.window_bits, "symbol_bits": c.cfg.symbol_bits,
                   "max_window_bytes": c.cfg.max_window_bytes},
        )

    def machine(self) -> str:
        """Where this actor computes (reported, never stamped into outputs: int8 outputs
        are the same bytes whatever made them)."""
        return self._machine

    # Segmentation and coding return what they counted with their result, so that each
    # shard's stats hold the model work done for it (the actor serves many shards).

    def entropies(self, docs: list[bytes]) -> tuple[list[np.ndarray], Counts]:
        """Per-byte entropies of a part of the calibration sample (segmentation work)."""
        def timed():
            t = time.perf_counter()
            out = self.comp.entropies(docs)
            self.comp.stats.seg_time += time.perf_counter() - t
            return out

        return self._counted(timed)

    def segment(self, docs: list[bytes], thresholds: Thresholds | None) -> tuple[list[np.ndarray], Counts]:
        return self._counted(self.comp.segment, docs, thresholds)

    def encode(self, data: np.ndarray, seg_off: np.ndarray) -> tuple[Windows, Counts]:
        return self._counted(self.comp.encode_segments, data, seg_off)

    def _counted(self, fn, *args):
        before = dataclasses.replace(self.comp.stats)
        out = _on_device(fn, *args)
        if self.busy is not None:
            self.busy.update(self.comp.stats.seg_time + self.comp.stats.code_time)
        return out, self.comp.stats.since(before)

    def decode(self, windows: Windows, seg_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _on_device(self.comp.decode_segments, windows, seg_off)

    def pid(self) -> int:
        return os.getpid()

    def maxrss(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


DEVICE_ERROR_EXIT = 70  # the model actor's exit status after a device error (EX_SOFTWARE)


def _on_device(fn, *args):
    """Run model work; a device error ends the process. After a CUDA error (a
    device-side assert, an illegal address) every later CUDA call of the process fails,
    but the actor would live on and fail every shard sent to it: Ray restarts only
    actors that die, and then the shard tasks retry on the fresh one."""
    try:
        return fn(*args)
    except Exception as e:
        torch = sys.modules.get("torch")  # loaded: model work ran
        if torch is None or not isinstance(e, torch.AcceleratorError):
            raise
        print(f"[proxycomp] model actor {os.getpid()}: device error, exiting so that Ray restarts it: "
              f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr, flush=True)
        os._exit(DEVICE_ERROR_EXIT)


def read_checkpoint(url: str, storage_options: dict | None = None) -> bytes | None:
    """Checkpoint bytes from any fsspec URL (None: the shipped checkpoint)."""
    if not url:
        return None
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        return f.read()


class BusyGauge:
    """A model actor's busy fraction: time in model work over time alive, since its
    (re)start; set after every call."""

    def __init__(self, actor: str):
        self.gauge = Gauge("proxycomp_model_busy_fraction", "share of a model actor's time in segmentation and coding",
                           tag_keys=("actor",))
        self.gauge.set_default_tags({"actor": actor})
        self.born = time.perf_counter()

    def update(self, busy_s: float) -> None:
        alive = time.perf_counter() - self.born
        self.gauge.set(min(1.0, busy_s / alive) if alive > 0 else 0.0)
