"""The neural compressor: documents in, per-document proxy-compressed records out.

    comp = NeuralCompressor.load()                      # the shipped checkpoint
    records = comp.compress([b"def f():\n    return 1\n", ...], thresholds)
    assert comp.verify(records, docs) == [True, ...]

Segmentation runs one forward pass per byte (chunked beyond the context). Coding runs
the model step by step in a fixed number of lanes (`coder.lanes`): each lane carries a
segment, the context resets to BOS at every window, and the KV cache makes every model
position one coded byte. Quantization happens on the model's device and only the two
integers per byte cross to the CPU.

Numerics: every model call has a fixed shape (lanes x 1 for coding, rows x bucket for
segmentation) and no row reads another, so a segment's symbols do not depend on which
segments shared its batch. That is what lets the segment cache serve an entry computed
in another batch, and lets `verify` decode in any batch. `numerics` names what the
results do depend on (device kind, precision, lane count, versions); it is part of the
cache namespace and of every output's metadata.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import platform
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cache.entry import pack_entry, segment_key, unpack_entry
from coder import CoderConfig, Windows, pack
from coder.constants import FORMAT_VERSION
from coder.lanes import LaneDecoder, LaneEncoder
from coder.quantize import coding_ints, quantize, quantize_logits

from .model import BOS, ByteLM, load_checkpoint
from .segment import EntropyStats, SegmentConfig, SegmenterKind, Thresholds, calibrate, entropies, segment_offsets

DEFAULT_CHECKPOINT = "small.pt"


class Precision(enum.Enum):
    BF16 = "bf16"
    FP32 = "fp32"


@dataclass(frozen=True)
class EngineConfig:
    lanes: int = 512  # segments coded side by side
    group: int = 256  # lanes per model call: every call has exactly this shape, and only
    #                  groups with a waiting lane are computed (part of the numerics)
    max_window_bytes: int = 32  # also the KV cache length per lane
    window_bits: int = 16
    symbol_bits: int = 16
    precision: Precision = Precision.BF16
    device: str = "auto"  # auto: cuda if available

    @property
    def coder(self) -> CoderConfig:
        return CoderConfig(self.window_bits, self.symbol_bits, self.max_window_bytes)


@dataclass
class DocRecord:
    """One document, compressed. Segment s covers bytes seg_off[s]:seg_off[s+1], its
    windows are window_counts[win_off[s]:win_off[s+1]] and its symbols
    symbols[sym_off[s]:sym_off[s+1]]."""

    n_bytes: int
    seg_off: np.ndarray  # int64 [S + 1]
    win_off: np.ndarray  # int64 [S + 1]
    window_counts: np.ndarray  # int32 [n_windows], bytes per window (0: escape)
    window_codes: np.ndarray  # uint32 [n_windows]
    sym_off: np.ndarray  # int64 [S + 1]
    symbols: np.ndarray  # uint16 [n_symbols]
    cache_hits: int = 0  # segments served by the cache

    @property
    def windows(self) -> Windows:
        return Windows(self.window_codes, self.window_counts, self.win_off)


@dataclass
class Stats:
    docs: int = 0
    bytes: int = 0
    segments: int = 0
    unique_segments: int = 0  # after de-duplication within the call
    cache_hits: int = 0
    coded_bytes: int = 0  # bytes the model actually coded (misses)
    windows: int = 0
    symbols: int = 0
    seg_positions: int = 0  # model positions computed for segmentation (padding included)
    code_positions: int = 0  # useful model positions for coding
    code_padded_positions: int = 0  # steps x lanes
    seg_time: float = 0.0
    code_time: float = 0.0
    model_time: float = 0.0  # inside model forward calls, both stages

    def add(self, other: "Stats") -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NeuralCompressor:
    def __init__(self, model: ByteLM, fingerprint: str, cfg: EngineConfig = EngineConfig(),
                 seg_cfg: SegmentConfig = SegmentConfig()):
        if cfg.max_window_bytes < 1 or cfg.max_window_bytes > model.cfg.block_size:
            raise ValueError(f"max_window_bytes must be in 1..{model.cfg.block_size}")
        if cfg.group < 1 or cfg.lanes % cfg.group:
            raise ValueError(f"lanes ({cfg.lanes}) must be a positive multiple of group ({cfg.group})")
        self.cfg, self.seg_cfg, self.fingerprint = cfg, seg_cfg, fingerprint
        want_cuda = cfg.device == "auto" and torch.cuda.is_available()
        self.device = torch.device("cuda" if want_cuda else ("cpu" if cfg.device == "auto" else cfg.device))
        self.model = model.to(self.device).eval()
        self.dtype = torch.bfloat16 if cfg.precision is Precision.BF16 else torch.float32
        self.stats = Stats()
        self.training_info: dict = {}  # what the checkpoint says about its training
        with torch.no_grad(), self.autocast():
            self.kv = [self.model.new_cache(cfg.group, cfg.max_window_bytes, dtype=self.dtype)
                       for _ in range(cfg.lanes // cfg.group)]
            # The window-start distribution: what the model predicts after BOS alone.
            bos_logits = self.model.step(
                torch.full((cfg.group,), BOS, device=self.device), torch.zeros(cfg.group, dtype=torch.long, device=self.device), self.kv[0]
            )
        self.bos_freq = quantize_logits(bos_logits[:1])[0].cpu().numpy()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def load(cls, checkpoint: str | Path | bytes | None = None, cfg: EngineConfig = EngineConfig(),
             seg_cfg: SegmentConfig = SegmentConfig()) -> "NeuralCompressor":
        """From a checkpoint file or its bytes (default: the shipped one), loaded with
        weights_only=True so that an untrusted file cannot run code."""
        if checkpoint is None:
            checkpoint = resources.files("compressor_model") / "checkpoints" / DEFAULT_CHECKPOINT
        data = checkpoint if isinstance(checkpoint, bytes) else Path(checkpoint).read_bytes()
        ckpt = load_checkpoint(data)
        model = ByteLM.from_checkpoint(ckpt)
        comp = cls(model, ckpt.get("fingerprint") or model.fingerprint(), cfg, seg_cfg)
        comp.training_info = ckpt.get("training", {})
        return comp

    def autocast(self):
        if self.dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def numerics(self) -> str:
        dev = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else (platform.machine() + "-cpu")
        return f"{dev}|{self.cfg.precision.value}|group={self.cfg.group}|torch={torch.__version__}"

    @property
    def namespace(self) -> str:
        """Everything a segment's symbols depend on besides its bytes."""
        c = self.cfg
        text = f"v{FORMAT_VERSION}|{self.fingerprint}|{self.numerics}|W{c.window_bits}|b{c.symbol_bits}|max{c.max_window_bytes}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    # -- segmentation -------------------------------------------------------------------

    def entropies(self, docs: list[bytes]) -> list[np.ndarray]:
        st = EntropyStats()
        t = time.perf_counter()
        out = entropies(self.model, docs, self.seg_cfg, self.autocast, st)
        _sync(self.device)
        self.stats.seg_positions += st.positions
        self.stats.model_time += time.perf_counter() - t
        return out

    def calibrate(self, docs: list[bytes]) -> Thresholds:
        return calibrate(self.model, docs, self.seg_cfg, self.autocast, self.fingerprint)

    def segment(self, docs: list[bytes], thresholds: Thresholds | None) -> list[np.ndarray]:
        t = time.perf_counter()
        hs = self.entropies(docs) if self.seg_cfg.kind is SegmenterKind.ENTROPY else [None] * len(docs)
        out = [segment_offsets(d, h, self.seg_cfg, thresholds) for d, h in zip(docs, hs)]
        self.stats.seg_time += time.perf_counter() - t
        return out

    # -- coding -------------------------------------------------------------------------

    def _step_groups(self, waiting: np.ndarray, tok: np.ndarray, slot: np.ndarray, finish) -> tuple[list, int]:
        """One model step for every lane group that has a waiting lane. `finish(logits,
        rows)` turns a group's logits into what the coder needs; returns the per-group
        results (None for idle groups) and the number of rows computed."""
        g = self.cfg.group
        busy = np.flatnonzero(waiting.reshape(-1, g).any(axis=1))
        out = [None] * (len(waiting) // g)
        tok_t = torch.from_numpy(tok).to(self.device, non_blocking=True)
        slot_t = torch.from_numpy(slot).to(self.device, non_blocking=True)
        for k in busy:
            rows = slice(k * g, (k + 1) * g)
            with self.autocast():
                logits = self.model.step(tok_t[rows], slot_t[rows], self.kv[k])
            out[k] = finish(torch.softmax(logits.float(), -1), rows)
        return out, len(busy) * g

    @torch.no_grad()
    def encode_segments(self, data: np.ndarray, seg_off: np.ndarray) -> Windows:
        """Windows of every segment of data (one concatenated uint8 array)."""
        t0 = time.perf_counter()
        enc = LaneEncoder(data, seg_off, self.cfg.lanes, self.bos_freq, self.cfg.coder)
        cum = np.zeros(self.cfg.lanes, np.int32)
        freq = np.ones(self.cfg.lanes, np.int32)
        model_t, padded = 0.0, 0
        while enc.waiting_count:
            t = time.perf_counter()
            target = torch.from_numpy(enc.target).to(self.device, non_blocking=True)
            parts, rows = self._step_groups(enc.waiting, enc.tok, enc.slot, lambda p, r: coding_ints(p, target[r]))
            busy = [k for k, p in enumerate(parts) if p is not None]
            if busy:
                both = torch.stack([torch.cat([parts[k][0] for k in busy]), torch.cat([parts[k][1] for k in busy])]).cpu().numpy()
                for j, k in enumerate(busy):
                    g = self.cfg.group
                    cum[k * g : (k + 1) * g] = both[0, j * g : (j + 1) * g]
                    freq[k * g : (k + 1) * g] = both[1, j * g : (j + 1) * g]
            model_t += time.perf_counter() - t
            padded += rows
            enc.advance(cum, freq)
        self.stats.code_positions += enc.positions
        self.stats.code_padded_positions += padded
        self.stats.model_time += model_t
        self.stats.code_time += time.perf_counter() - t0
        return enc.windows()

    @torch.no_grad()
    def decode_segments(self, windows: Windows, seg_off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bytes, bad) from windows; bad[s] != 0 marks a segment that did not decode."""
        dec = LaneDecoder(windows, seg_off, self.cfg.lanes, self.bos_freq, self.cfg.coder)
        rows_out = np.ones((self.cfg.lanes, 256), np.int32)
        while dec.waiting_count:
            parts, _ = self._step_groups(dec.waiting, dec.tok, dec.slot, lambda p, r: quantize(p))
            for k, p in enumerate(parts):
                if p is not None:
                    rows_out[k * self.cfg.group : (k + 1) * self.cfg.group] = p.cpu().numpy()
            dec.advance(rows_out)
        return dec.out, dec.bad_seg

    # -- documents ----------------------------------------------------------------------

    def compress(self, docs: list[bytes], thresholds: Thresholds | None = None, cache=None,
                 seg_offsets: list[np.ndarray] | None = None) -> list[DocRecord]:
        """Segment, look segments up in the cache, code the misses once each, pack.

        cache: an object with get_many(keys) / put_many([(key, blob)]) (see cache/).
        """
        offs = seg_offsets if seg_offsets is not None else self.segment(docs, thresholds)
        records, counts = compress_documents(docs, offs, self.namespace, self.cfg.coder, self.encode_segments, cache)
        self.stats.add(counts)
        return records

    def decode(self, records: list[DocRecord]) -> list[bytes | None]:
        """The documents back from their records (None where a segment fails to decode)."""
        if not records:
            return []
        codes = np.concatenate([r.window_codes for r in records])
        counts = np.concatenate([r.window_counts for r in records])
        seg_off, win_off = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
        base_b = base_w = 0
        for r in records:
            seg_off.append(r.seg_off[1:] + base_b)
            win_off.append(r.win_off[1:] + base_w)
            base_b += r.n_bytes
            base_w += len(r.window_counts)
        seg_off, win_off = np.concatenate(seg_off), np.concatenate(win_off)
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


def compress_documents(docs: list[bytes], offs: list[np.ndarray], namespace: str, coder_cfg: CoderConfig,
                       encode_segments, cache=None) -> tuple[list[DocRecord], Stats]:
    """Records for segmented documents: every distinct segment is looked up in the cache
    and the misses are coded once each by `encode_segments(data, seg_off) -> Windows`
    (in this process, or on a model actor). Returns the records and what happened."""
    segs = [(d, int(a), int(b)) for d, off in enumerate(offs) for a, b in zip(off[:-1], off[1:])]
    keys = [segment_key(namespace, docs[d][a:b]) for d, a, b in segs]
    first: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    ukeys = list(first)
    found: dict[bytes, tuple] = {}
    if cache is not None and ukeys:
        for k, blob in zip(ukeys, cache.get_many(ukeys)):
            d, a, b = segs[first[k]]
            entry = unpack_entry(namespace, b - a, blob)
            if entry is not None:
                found[k] = entry
    todo = [k for k in ukeys if k not in found]
    st = Stats(docs=len(docs), bytes=sum(len(d) for d in docs), segments=len(segs), unique_segments=len(ukeys),
               cache_hits=len(ukeys) - len(todo))
    if todo:
        pieces = [docs[segs[first[k]][0]][segs[first[k]][1] : segs[first[k]][2]] for k in todo]
        off = np.zeros(len(pieces) + 1, np.int64)
        np.cumsum([len(p) for p in pieces], out=off[1:])
        win = encode_segments(np.frombuffer(b"".join(pieces), np.uint8), off)
        new = []
        for j, k in enumerate(todo):
            a, b = win.win_off[j], win.win_off[j + 1]
            found[k] = (win.codes[a:b], win.counts[a:b])
            new.append((k, pack_entry(namespace, len(pieces[j]), win.codes[a:b], win.counts[a:b])))
        if cache is not None:
            cache.put_many(new)
        st.coded_bytes = int(off[-1])
    hit_keys = set(ukeys) - set(todo)
    records, i = [], 0
    for d, off in enumerate(offs):
        n_seg = len(off) - 1
        mine = keys[i : i + n_seg]
        i += n_seg
        rec = _record(len(docs[d]), off, [found[k] for k in mine], coder_cfg)
        rec.cache_hits = sum(1 for k in mine if k in hit_keys)
        records.append(rec)
    st.windows = sum(len(r.window_counts) for r in records)
    st.symbols = sum(len(r.symbols) for r in records)
    return records, st


def _record(n_bytes: int, off: np.ndarray, entries: list[tuple], coder_cfg: CoderConfig) -> DocRecord:
    win_off = np.zeros(len(entries) + 1, np.int64)
    np.cumsum([len(c) for c, _ in entries], out=win_off[1:])
    codes = np.concatenate([c for c, _ in entries]).astype(np.uint32) if entries else np.zeros(0, np.uint32)
    counts = np.concatenate([n for _, n in entries]).astype(np.int32) if entries else np.zeros(0, np.int32)
    packed = pack(Windows(codes, counts, win_off), coder_cfg)
    return DocRecord(n_bytes, np.asarray(off, np.int64), win_off, counts, codes, packed.sym_off, packed.symbols)
