"""Segmentation: per-byte entropy from the model, and the segmenters.

Entropy-based boundaries (method.md point 2): a segment starts before byte i when
H_i > theta_abs or H_i - H_{i-1} > theta_jump, both global percentiles calibrated once
on a corpus sample (`calibrate`) and stored with the run. Fixed-length and newline
segmenters exist for the paper's ablations. Every segmenter then splits segments
longer than `max_segment_bytes`, which bounds memory and per-lane work.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .model import BOS, ByteLM

BUCKETS = (32, 64, 128)  # short documents run in these row lengths (plus the block size)


class SegmenterKind(enum.Enum):
    ENTROPY = "entropy"
    NEWLINE = "newline"
    FIXED = "fixed"


@dataclass(frozen=True)
class SegmentConfig:
    kind: SegmenterKind = SegmenterKind.ENTROPY
    percentile: float = 95.0  # for calibration of both thresholds
    fixed_bytes: int = 64  # FIXED: segment length
    max_segment_bytes: int = 128  # 99th percentile on code is ~76 bytes; longer ones bound the lane tail
    context_overlap: int = 64  # long documents: bytes of context each later chunk re-reads
    rows: int = 32  # fixed batch of rows per forward pass (keeps results batch-invariant)


@dataclass(frozen=True)
class Thresholds:
    theta_abs: float
    theta_jump: float
    percentile: float
    sample_docs: int
    sample_bytes: int
    fingerprint: str  # of the model the entropies came from

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Thresholds":
        return cls(**json.loads(text))


@dataclass
class EntropyStats:
    positions: int = 0  # rows x row length actually computed, padding included
    useful: int = 0  # bytes that got an entropy


def _rows_for(doc_len: int, block: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, row_len, first_used, n_used) rows covering every position of a document.

    Row k feeds BOS + doc[start : start + row_len - 1] and its output j is the
    distribution of doc[start + j]. Later rows re-read `overlap` bytes of context.
    """
    if doc_len <= block:
        row_len = next((b for b in BUCKETS if b >= doc_len and b < block), block)
        return [(0, row_len, 0, doc_len)]
    rows, stride = [(0, block, 0, block)], block - overlap
    start = stride
    while start + overlap < doc_len:
        rows.append((start, block, overlap, min(block, doc_len - start) - overlap))
        start += stride
    return rows


@torch.no_grad()
def entropies(model: ByteLM, docs: list[bytes], cfg: SegmentConfig, autocast, stats: EntropyStats | None = None) -> list[np.ndarray]:
    """Per-byte entropy (bits, float32) of the model's next-byte distribution."""
    block, device = model.cfg.block_size, next(model.parameters()).device
    overlap = min(cfg.context_overlap, block // 2)
    out = [np.zeros(len(d), np.float32) for d in docs]
    jobs: dict[int, list] = {}
    for i, d in enumerate(docs):
        if not d:
            continue
        for start, row_len, first, n_used in _rows_for(len(d), block, overlap):
            jobs.setdefault(row_len, []).append((i, start, first, n_used))
    for row_len, items in sorted(jobs.items()):
        for k in range(0, len(items), cfg.rows):
            group = items[k : k + cfg.rows]
            x = np.full((cfg.rows, row_len), BOS, np.int64)  # fixed shape: padded rows
            for r, (i, start, _, _) in enumerate(group):
                chunk = np.frombuffer(docs[i][start : start + row_len - 1], np.uint8)
                x[r, 1 : 1 + len(chunk)] = chunk
            with autocast():
                logits, _ = model(torch.from_numpy(x).to(device))
            logp = torch.log_softmax(logits.float(), -1)
            h = (-(logp.exp() * logp).sum(-1) / math.log(2)).cpu().numpy()
            for r, (i, start, first, n_used) in enumerate(group):
                out[i][start + first : start + first + n_used] = h[r, first : first + n_used]
            if stats:
                stats.positions += cfg.rows * row_len
                stats.useful += sum(n for *_, n in group)
    return out


def calibrate(model: ByteLM, docs: list[bytes], cfg: SegmentConfig, autocast, fingerprint: str) -> Thresholds:
    """Global percentile thresholds of H and of its rise H_i - H_{i-1} over a sample."""
    hs = [h for h in entropies(model, [d for d in docs if d], cfg, autocast) if len(h)]
    if not hs:
        raise ValueError("calibrate: the sample has no bytes")
    all_h = np.concatenate(hs)
    jumps = np.concatenate([np.diff(h) for h in hs if len(h) > 1] or [np.zeros(1, np.float32)])
    return Thresholds(
        theta_abs=float(np.percentile(all_h, cfg.percentile)),
        theta_jump=float(np.percentile(jumps, cfg.percentile)),
        percentile=cfg.percentile,
        sample_docs=len(hs),
        sample_bytes=int(all_h.size),
        fingerprint=fingerprint,
    )


def _entropy_starts(doc: bytes, h: np.ndarray | None, cfg: SegmentConfig, th: Thresholds | None) -> np.ndarray:
    if h is None or th is None:
        raise ValueError("the entropy segmenter needs entropies and calibrated thresholds")
    rise = np.diff(h, prepend=h[:1])
    return np.flatnonzero((h > th.theta_abs) | (rise > th.theta_jump))


def _newline_starts(doc: bytes, h, cfg, th) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(doc, np.uint8) == ord("\n")) + 1


def _fixed_starts(doc: bytes, h, cfg, th) -> np.ndarray:
    return np.arange(cfg.fixed_bytes, len(doc), cfg.fixed_bytes)


# name -> implementation; also the choices the CLI offers.
SEGMENTERS: dict[SegmenterKind, Callable] = {
    SegmenterKind.ENTROPY: _entropy_starts,
    SegmenterKind.NEWLINE: _newline_starts,
    SegmenterKind.FIXED: _fixed_starts,
}


def segment_offsets(doc: bytes, h: np.ndarray | None, cfg: SegmentConfig, th: Thresholds | None = None) -> np.ndarray:
    """Segment offsets [0, ..., len(doc)] (int64) of one document."""
    n = len(doc)
    if n == 0:
        return np.zeros(1, np.int64)
    starts = SEGMENTERS[cfg.kind](doc, h, cfg, th)
    off = np.unique(np.concatenate([[0], starts[(starts > 0) & (starts < n)], [n]])).astype(np.int64)
    long = np.flatnonzero(np.diff(off) > cfg.max_segment_bytes)
    if long.size:  # split over-long segments into max_segment_bytes pieces
        extra = [np.arange(off[i] + cfg.max_segment_bytes, off[i + 1], cfg.max_segment_bytes) for i in long]
        off = np.unique(np.concatenate([off, *extra]))
    return off
