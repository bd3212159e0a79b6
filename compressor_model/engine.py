"""The neural compressor: documents in, per-document proxy-compressed records out.

    comp = NeuralCompressor.load()                      # the shipped checkpoint
    records = comp.compress([b"def f():\n    return 1\n", ...], thresholds)
    assert comp.verify(records, docs) == [True, ...]

Segmentation runs one forward pass per byte in fixed-shape rows (`segment.entropies`).
Coding runs the model step by step in a fixed number of lanes (`coder.lanes`): each lane
carries a segment, the context resets to BOS at every window, and the KV cache makes
every model position one coded byte. Quantization happens on the model's device and only
the two integers per byte cross to the host. The lanes form `lane_sets` sets: while the
device computes a step of one set, the Numba coder consumes the last step of another
(`steps.LaneSteps`); on CUDA every call is a CUDA graph replay.

Numerics: every model call has a fixed shape (`group` x 1 for coding, rows x bucket for
segmentation) and no row reads another, so a segment's symbols do not depend on which
segments shared its batch. That is what lets the segment cache serve an entry computed
in another batch, and lets `verify` decode in any batch. `numerics` names what the
results do depend on (device kind, precision, group size, versions); it is part of the
cache namespace and of every output's metadata.
"""

from __future__ import annotations

import copy
import hashlib
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from coder import Windows, stitch_offsets
from coder.constants import FORMAT_VERSION
from coder.lanes import LaneDecoder, LaneEncoder

from . import intmodel, numerics
from .config import EngineConfig, Precision, SegmentConfig, SegmenterKind, Thresholds
from .intmath import INT_FORMAT
from .intmodel import IntByteLM
from .model import BOS, ByteLM, load_checkpoint
from .records import Counts, DocRecord, SegmentStore, compress_documents
from .runner import Layer, layer_for
from .segment import (
    EntropyStats,
    calibrate_thresholds,
    entropies,
    row_lengths,
    segment_offsets,
)
from .steps import EntropyRows, LaneSteps, StepMode, frequency_rows, new_cache

DEFAULT_CHECKPOINT = "small.pt"


def _checkpoint_bytes(checkpoint: str | Path | bytes | None) -> bytes:
    if checkpoint is None:
        checkpoint = resources.files("compressor_model") / "checkpoints" / DEFAULT_CHECKPOINT
    return checkpoint if isinstance(checkpoint, bytes) else Path(checkpoint).read_bytes()


def checkpoint_fingerprint(checkpoint: str | Path | bytes | None = None, precision: Precision = Precision.AUTO) -> str:
    """The fingerprint a compressor of this precision loaded from this checkpoint has
    (weights_only, as `load`): the float model's, or for int8 that of its integer form
    too. Read from what the checkpoint records where it can (the driver builds no model
    then; the model actors check the stored form against its digest when they load it)."""
    ckpt = load_checkpoint(_checkpoint_bytes(checkpoint))
    int8 = numerics.resolve(precision) is Precision.INT8
    fp, digest = ckpt.get("fingerprint"), intmodel.stored_digest(ckpt)
    if fp and (digest or not int8):
        return intmodel.fingerprint(fp, digest) if int8 else fp
    model = ByteLM.from_checkpoint(ckpt)
    fp = fp or model.fingerprint()
    return intmodel.fingerprint(fp, intmodel.from_checkpoint(ckpt, model).digest()) if int8 else fp


class NeuralCompressor:
    def __init__(self, model: ByteLM, fingerprint: str, cfg: EngineConfig = EngineConfig(),
                 seg_cfg: SegmentConfig = SegmentConfig(), layer: Layer | None = None, int_model: IntByteLM | None = None):
        if not cfg.coder.windowed:
            raise ValueError("window_bits 0 (no windows) codes whole segments: an analysis mode "
                             "(compressor_model.ablation), not the engine's")
        if cfg.max_window_bytes < 1 or cfg.max_window_bytes > model.cfg.block_size:
            raise ValueError(f"max_window_bytes must be in 1..{model.cfg.block_size}")
        self.device = numerics.pick_device(cfg.device)
        sets = cfg.lane_sets or (2 if self.device.type == "cuda" else 1)
        if cfg.group < 1 or cfg.lanes % (cfg.group * sets):
            raise ValueError(f"lanes ({cfg.lanes}) must be a positive multiple of group ({cfg.group}) x lane_sets ({sets})")
        self.cfg, self.seg_cfg, self.lane_sets = cfg, seg_cfg, sets
        self.float_model, self.float_fingerprint = model, fingerprint  # the caller's, as given
        self.int_model = int_model
        self.precision = numerics.resolve(cfg.precision)
        if self.device.type == "cuda":
            numerics.fix_cuda_math()
        if self.precision is Precision.INT8:
            self.int_model = int_model if int_model is not None else intmodel.quantize(model)
            self.fingerprint = intmodel.fingerprint(fingerprint, self.int_model.digest())
            self.model = copy.deepcopy(self.int_model).to(self.device)
            if cfg.compile and self.device.type == "cpu":  # CUDA: graphs already remove the launch overhead
                self.model.compile()
        else:
            # A copy: the caller's model keeps its device and dtypes (tests share one model
            # between compressors of several devices and precisions).
            self.fingerprint = fingerprint
            self.model = numerics.cast_once(copy.deepcopy(model), self.precision).to(self.device).eval()
        self.stats = Counts()
        self.training_info: dict = {}  # what the checkpoint says about its training
        self.layer = layer or layer_for(self.device, cfg.cuda_graphs)
        with torch.no_grad(), self.autocast():
            self.kv = [new_cache(self.model, cfg.group, cfg.max_window_bytes, self.precision)
                       for _ in range(cfg.lanes // cfg.group)]
            # The window-start distribution: what the model predicts after BOS alone.
            bos_logits = self.model.step(
                torch.full((cfg.group,), BOS, device=self.device), torch.zeros(cfg.group, dtype=torch.long, device=self.device), self.kv[0]
            )
        self.bos_freq = frequency_rows(self.model, bos_logits[:1], self.precision)[0].to(torch.int32).cpu().numpy()
        self._rows = EntropyRows(self.model, self.layer, self.precision)
        self._steps = {m: LaneSteps(self.model, self.kv, cfg.group, sets, self.layer, self.precision, m) for m in StepMode}

    # -- construction -------------------------------------------------------------------

    @classmethod
    def load(cls, checkpoint: str | Path | bytes | None = None, cfg: EngineConfig = EngineConfig(),
             seg_cfg: SegmentConfig = SegmentConfig()) -> "NeuralCompressor":
        """From a checkpoint file or its bytes (default: the shipped one), loaded with
        weights_only=True so that an untrusted file cannot run code."""
        ckpt = load_checkpoint(_checkpoint_bytes(checkpoint))
        model = ByteLM.from_checkpoint(ckpt)
        q = intmodel.from_checkpoint(ckpt, model) if numerics.resolve(cfg.precision) is Precision.INT8 else None
        comp = cls(model, ckpt.get("fingerprint") or model.fingerprint(), cfg, seg_cfg, int_model=q)
        comp.training_info = ckpt.get("training", {})
        return comp

    def sibling(self, cfg: EngineConfig) -> "NeuralCompressor":
        """A compressor of the same model with other engine settings."""
        return NeuralCompressor(self.float_model, self.float_fingerprint, cfg, self.seg_cfg, int_model=self.int_model)

    def autocast(self):
        return numerics.autocast(self.device, self.precision)

    @property
    def numerics(self) -> str:
        if self.precision is Precision.INT8:
            return f"int8-v{INT_FORMAT}"  # exact: no device, kernel, batch shape or version in it
        return (f"{numerics.device_kind(self.device)}|{self.precision.value}|group={self.cfg.group}"
                f"|torch={torch.__version__}")

    @property
    def namespace(self) -> str:
        """Everything a segment's symbols depend on besides its bytes."""
        c = self.cfg
        text = f"v{FORMAT_VERSION}|{self.fingerprint}|{self.numerics}|W{c.window_bits}|b{c.symbol_bits}|max{c.max_window_bytes}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def warm_up(self) -> None:
        """Run every fixed-shape call once: each segmentation row shape and each coding
        group in both modes (on CUDA: every graph captured). A benchmark's timed region
        then holds no capture; a long-running actor would pay it on first use."""
        with torch.no_grad():
            for n in row_lengths(self.model.cfg.block_size):
                self._rows(np.full((self.seg_cfg.rows_for(n), n), BOS, np.int64))
            for steps in self._steps.values():
                steps.warm_up()

    @torch.no_grad()
    def frequency_rows(self, x: torch.Tensor) -> torch.Tensor:
        """[rows, T] BOS + bytes (on the device) -> [rows, T, 256] the coder's integer
        frequencies of each next byte, as a whole-row forward pass gives them (analyses:
        the coding loop itself steps lanes through `steps`)."""
        with self.autocast():
            out = self.model(x)
        return frequency_rows(self.model, out if self.precision is Precision.INT8 else out[0], self.precision)

    # -- segmentation -------------------------------------------------------------------

    @torch.no_grad()
    def entropies(self, docs: list[bytes]) -> list[np.ndarray]:
        st = EntropyStats()
        t = self._rows.seconds
        out = entropies(self._rows, self.model.cfg.block_size, docs, self.seg_cfg, st)
        self.stats.seg_positions += st.positions
        self.stats.model_time += self._rows.seconds - t
        return out

    def calibrate(self, docs: list[bytes]) -> Thresholds:
        """Global percentile thresholds from the entropies of a sample."""
        t = time.perf_counter()
        th = calibrate_thresholds(self.entropies([d for d in docs if d]), self.seg_cfg.percentile, self.fingerprint)
        self.stats.seg_time += time.perf_counter() - t  # segmentation work: it counts as the model being busy
        return th

    def segment(self, docs: list[bytes], thresholds: Thresholds | None) -> list[np.ndarray]:
        t = time.perf_counter()
        hs = self.entropies(docs) if self.seg_cfg.kind is SegmenterKind.ENTROPY else [None] * len(docs)
        out = [segment_offsets(d, h, self.seg_cfg, thresholds) for d, h in zip(docs, hs)]
        self.stats.seg_time += time.perf_counter() - t
        return out

    # -- coding -------------------------------------------------------------------------

    def _drive(self, steps: LaneSteps, lanes, advance) -> int:
        """The coding loop: every lane set alternates between a model step on the device
        and its coder kernel on the host, sets in a fixed rotation (so lane assignment,
        and with it everything, is the same on every run). `advance(lo, hi)` feeds the
        finished step of lanes [lo, hi) to the coder and returns how many still wait.
        Returns the rows computed."""
        rows, pending = 0, []
        try:
            for s, (lo, hi) in enumerate(steps.sets):
                if lanes.waiting[lo:hi].any():
                    rows += steps.launch(s, lanes.waiting)
                    pending.append(s)
            while pending:
                s = pending[0]
                steps.wait(s)
                pending.pop(0)
                if advance(*steps.sets[s]):
                    rows += steps.launch(s, lanes.waiting)
                    pending.append(s)
        except BaseException:
            # Steps still in flight read the pinned inputs and write the outputs; the
            # next call rewrites both, so nothing may be in flight when this one ends.
            for s in pending:
                steps.wait(s)
            raise
        return rows

    @torch.no_grad()
    def encode_segments(self, data: np.ndarray, seg_off: np.ndarray) -> Windows:
        """Windows of every segment of data (one concatenated uint8 array)."""
        t0 = time.perf_counter()
        steps = self._steps[StepMode.ENCODE]
        io, out, model_t = steps.inp.np, steps.out.np, steps.seconds
        enc = LaneEncoder(data, seg_off, self.cfg.lanes, self.bos_freq, self.cfg.coder, tok=io[:, 0], slot=io[:, 1], target=io[:, 2])
        rows = self._drive(steps, enc, lambda lo, hi: enc.advance(out[:, 0], out[:, 1], lo, hi))
        self.stats.code_positions += enc.positions
        self.stats.code_padded_positions += rows
        self.stats.model_time += steps.seconds - model_t
        self.stats.code_time += time.perf_counter() - t0
        return enc.windows()

    @torch.no_grad()
    def decode_segments(self, windows: Windows, seg_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bytes, bad) from windows; bad[s] != 0 marks a segment that did not decode."""
        steps = self._steps[StepMode.DECODE]
        io, out = steps.inp.np, steps.out.np
        dec = LaneDecoder(windows, seg_off, self.cfg.lanes, self.bos_freq, self.cfg.coder, tok=io[:, 0], slot=io[:, 1])
        self._drive(steps, dec, lambda lo, hi: dec.advance(out, lo, hi))
        return dec.out, dec.bad_seg

    # -- documents ----------------------------------------------------------------------

    def compress(self, docs: list[bytes], thresholds: Thresholds | None = None, store: SegmentStore | None = None,
                 seg_offsets: list[np.ndarray] | None = None) -> list[DocRecord]:
        """Segment, look segments up in `store` (if any), code the misses once each, pack."""
        offs = seg_offsets if seg_offsets is not None else self.segment(docs, thresholds)
        records, counts = compress_documents(docs, offs, self.cfg.coder, self.encode_segments, store)
        self.stats.add(counts)
        return records

    def decode(self, records: list[DocRecord]) -> list[bytes | None]:
        """The documents back from their records (None where a segment fails to decode)."""
        if not records:
            return []
        codes = np.concatenate([r.window_codes for r in records])
        counts = np.concatenate([r.window_counts for r in records])
        seg_off, win_off = stitch_offsets(r.seg_off for r in records), stitch_offsets(r.win_off for r in records)
        data, bad = self.decode_segments(Windows(codes, counts, win_off), seg_off)
        out, s = [], 0
        for r in records:
            n_seg = len(r.seg_off) - 1
            ok = not bad[s : s + n_seg].any()
            a = int(seg_off[s])
            out.append(data[a : a + r.n_bytes].tobytes() if ok else None)
            s += n_seg
        return out

    def verify(self, records: list[DocRecord], docs: list[bytes]) -> list[bool]:
        """Decode every record with the model and compare with its document."""
        return [got == doc for got, doc in zip(self.decode(records), docs, strict=True)]
