"""Segmentation: per-byte entropy from the model, and the segmenters.

Entropy-based boundaries (method.md point 2): a segment starts before byte i when
H_i > theta_abs or H_i - H_{i-1} > theta_jump, both global percentiles calibrated once
on a corpus sample (`calibrate_thresholds`) and stored with the run. Fixed-length and newline
segmenters exist for the paper's ablations. Every segmenter then splits segments
longer than `max_segment_bytes`, which bounds memory and per-lane work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .config import SegmentConfig, SegmenterKind, Thresholds
from .model import BOS, ByteLM

MIN_ROW = 32  # the shortest row; documents up to the block run in power-of-two row lengths


@dataclass
class EntropyStats:
    positions: int = 0  # rows x row length actually computed, padding included
    useful: int = 0  # bytes that got an entropy


def row_lengths(block: int) -> list[int]:
    """The row shapes a model of this block size runs: 32, 64, ... below the block, then the block."""
    out, n = [], MIN_ROW
    while n < block:
        out.append(n)
        n *= 2
    return out + [block]


def _rows_for(doc_len: int, block: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, row_len, first_used, n_used) rows covering every position of a document.

    A row feeds BOS + doc[start : start + row_len - 1]; its output j is the distribution
    of doc[start + j] given doc[start : start + j]. A document up to the block is one row
    of the shortest length that holds it. A longer one is read in full-block rows, each
    re-reading at least `overlap` bytes as context (outputs before first_used are not
    used); the last row ends at the document's end, so it re-reads more context instead
    of computing padding. Cost: about block / (block - overlap) positions per byte.
    """
    if doc_len <= block:
        return [(0, next(n for n in row_lengths(block) if n >= doc_len), 0, doc_len)]
    rows, covered = [(0, block, 0, block)], block
    while covered < doc_len:
        start = min(covered - overlap, doc_len - block)
        end = start + block
        rows.append((start, block, covered - start, end - covered))
        covered = end
    return rows


def row_entropy(model: ByteLM, x: torch.Tensor) -> torch.Tensor:
    """[rows, T] model input (BOS + bytes) -> [rows, T] float32 entropy in bits of each
    next-byte distribution. The device computation, run eagerly or as a CUDA graph."""
    logits, _ = model(x)
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1) / math.log(2)


def entropies(forward: Callable[[np.ndarray], np.ndarray], block: int, docs: list[bytes], cfg: SegmentConfig,
              stats: EntropyStats | None = None) -> list[np.ndarray]:
    """Per-byte entropy (bits, float32) of the model's next-byte distribution.

    forward: int64 [rows, row_len] -> float32 [rows, row_len] (`row_entropy` on some
    device); it is always called with rows = cfg.rows_for(row_len), unused rows padded.
    """
    overlap = min(cfg.context_overlap, block // 2)
    out = [np.zeros(len(d), np.float32) for d in docs]
    jobs: dict[int, list] = {}
    for i, d in enumerate(docs):
        if d:
            for start, row_len, first, n_used in _rows_for(len(d), block, overlap):
                jobs.setdefault(row_len, []).append((i, start, first, n_used))
    for row_len, items in sorted(jobs.items()):
        rows = cfg.rows_for(row_len)
        for k in range(0, len(items), rows):
            group = items[k : k + rows]
            x = np.full((rows, row_len), BOS, np.int64)  # fixed shape: padded rows
            for r, (i, start, _, _) in enumerate(group):
                chunk = np.frombuffer(docs[i][start : start + row_len - 1], np.uint8)
                x[r, 1 : 1 + len(chunk)] = chunk
            h = forward(x)
            for r, (i, start, first, n_used) in enumerate(group):
                out[i][start + first : start + first + n_used] = h[r, first : first + n_used]
            if stats:
                stats.positions += rows * row_len
                stats.useful += sum(n for *_, n in group)
    return out


def calibrate_thresholds(hs: list[np.ndarray], percentile: float, fingerprint: str) -> Thresholds:
    """Global percentile thresholds of H and of its rise H_i - H_{i-1} over a sample."""
    hs = [h for h in hs if len(h)]
    if not hs:
        raise ValueError("calibrate: the sample has no bytes")
    all_h = np.concatenate(hs)
    jumps = np.concatenate([np.diff(h) for h in hs if len(h) > 1] or [np.zeros(1, np.float32)])
    return Thresholds(
        theta_abs=float(np.percentile(all_h, percentile)),
        theta_jump=float(np.percentile(jumps, percentile)),
        percentile=percentile,
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
