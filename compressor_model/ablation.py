"""The compression side of the paper's Table 6: nine ways to segment, window and pack,
measured with one model on one sample (raw bytes per symbol).

Every configuration codes the same documents with the same model. Entropies are
computed once and the thresholds are the sample's own percentiles (95th and 98th: the
paper's are the corpus's, and the sample stands for it). Windowed rows run the engine's
coding loop (`NeuralCompressor.encode_segments`); rows without windows code each
segment as one stream (`coder.stream`), the model's context reset at the segment's
start, every byte's distribution from one forward pass over the segment. Identical
segments code identically, so each distinct segment is coded once and counted as often
as it occurs. Segments are capped at the model's context (lines, fixed lengths) or at
`max_segment_bytes` (entropy, as the pipeline runs it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from coder import CoderConfig, decode_streams, encode_streams, pack, pack_streams, stitch_offsets

from .config import SegmentConfig, SegmenterKind
from .engine import NeuralCompressor
from .intmath import coding_ints
from .model import BOS
from .segment import calibrate_thresholds, segment_offsets


@dataclass(frozen=True)
class Ablation:
    segmenter: str  # "fixed-4", "lines", "entropy-95", ...
    segment: SegmentConfig
    window_bits: int  # 0: no windows
    symbol_bits: int
    paper_bytes_per_symbol: float


def table6(block_size: int, entropy: SegmentConfig = SegmentConfig()) -> list[Ablation]:
    """Table 6's rows, in the paper's order."""
    cap = block_size - 1  # a segment without windows must fit the model's context

    def fixed(n):
        return SegmentConfig(kind=SegmenterKind.FIXED, fixed_bytes=n, max_segment_bytes=cap)

    lines = SegmentConfig(kind=SegmenterKind.NEWLINE, max_segment_bytes=cap)

    def ent(p):
        return replace(entropy, kind=SegmenterKind.ENTROPY, percentile=p, max_segment_bytes=min(cap, entropy.max_segment_bytes))

    return [
        Ablation("fixed-4", fixed(4), 0, 8, 1.4),
        Ablation("fixed-8", fixed(8), 0, 8, 2.0),
        Ablation("fixed-16", fixed(16), 0, 8, 2.9),
        Ablation("lines", lines, 0, 8, 5.1),
        Ablation("lines", lines, 16, 8, 2.3),
        Ablation("entropy-98", ent(98.0), 16, 8, 1.8),
        Ablation("entropy-98", ent(98.0), 16, 16, 3.5),
        Ablation("entropy-95", ent(95.0), 32, 16, 4.1),
        Ablation("entropy-95", ent(95.0), 16, 16, 3.1),
    ]


def distinct(data: bytes, seg_off: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bytes, offsets) of the distinct segments, and how often each occurs."""
    index: dict[bytes, int] = {}
    occ: list[int] = []
    for a, b in zip(seg_off[:-1].tolist(), seg_off[1:].tolist()):
        k = index.setdefault(data[a:b], len(index))
        if k == len(occ):
            occ.append(0)
        occ[k] += 1
    segs = list(index)
    off = np.concatenate([[0], np.cumsum([len(s) for s in segs])]).astype(np.int64)
    return np.frombuffer(b"".join(segs), np.uint8), off, np.array(occ, np.int64)


@torch.no_grad()
def stream_ints(comp: NeuralCompressor, data: np.ndarray, seg_off: np.ndarray, tables: bool = False):
    """Each byte's (cum, freq) with the context reset at its segment's start: one
    forward pass per segment, rows of a power-of-two length in fixed-size calls. With
    tables=True, every position's whole frequency row instead (for decoding)."""
    n = len(data)
    cum, freq = np.zeros(n, np.int64), np.zeros(n, np.int64)
    rows_out = np.zeros((n, 256), np.int32) if tables else None
    lengths = np.diff(seg_off)
    buckets: dict[int, list[int]] = {}
    for s, ln in enumerate(lengths.tolist()):
        if ln:
            buckets.setdefault(1 << int(ln).bit_length(), []).append(s)  # BOS + bytes fit
    for row_len, segs in sorted(buckets.items()):
        if row_len > comp.model.cfg.block_size:
            raise ValueError(f"a segment of {row_len - 1}+ bytes does not fit the model's context")
        per_call = comp.seg_cfg.rows_for(row_len)
        for k in range(0, len(segs), per_call):
            group = segs[k : k + per_call]
            x = np.full((per_call, row_len), BOS, np.int64)
            for r, s in enumerate(group):
                x[r, 1 : 1 + lengths[s]] = data[seg_off[s] : seg_off[s + 1]]
            xt = torch.from_numpy(x).to(comp.device)
            rows = comp.frequency_rows(xt)[:, :-1]  # position t predicts byte t + 1
            if tables:
                q = rows.cpu().numpy()
            else:
                c, f = (t.cpu().numpy() for t in coding_ints(rows, xt[:, 1:].clamp(max=255)))
            for r, s in enumerate(group):
                a, ln = seg_off[s], lengths[s]
                if tables:
                    rows_out[a : a + ln] = q[r, :ln]
                else:
                    cum[a : a + ln], freq[a : a + ln] = c[r, :ln], f[r, :ln]
    return rows_out if tables else (cum, freq)


def run(comp: NeuralCompressor, docs: list[bytes], rows: list[Ablation] | None = None, verify_segments: int = 200) -> dict:
    """Bytes per symbol of every row on docs, plus what each row's segments look like.
    Rows without windows are decoded back (the first verify_segments distinct
    segments) with frequency tables computed from the decoded prefix's own context."""
    rows = rows or table6(comp.model.cfg.block_size, comp.seg_cfg)
    docs = [d for d in docs if d]
    total = sum(map(len, docs))
    t0 = time.perf_counter()
    hs = comp.entropies(docs)
    thresholds = {p: calibrate_thresholds(hs, p, comp.fingerprint)
                  for p in sorted({r.segment.percentile for r in rows if r.segment.kind is SegmenterKind.ENTROPY})}
    coders: dict[tuple[int, int], NeuralCompressor] = {}
    windows_by: dict[tuple, tuple] = {}
    out_rows = []
    for row in rows:
        t = time.perf_counter()
        th = thresholds.get(row.segment.percentile) if row.segment.kind is SegmenterKind.ENTROPY else None
        offs = [segment_offsets(d, h, row.segment, th) for d, h in zip(docs, hs)]
        seg_off = stitch_offsets(offs)
        data, u_off, occ = distinct(b"".join(docs), seg_off)
        info: dict = {}
        if row.window_bits:
            key = (row.segment, row.window_bits)
            if key not in windows_by:
                mwb = min(comp.model.cfg.block_size, max(comp.cfg.max_window_bytes, 2 * row.window_bits))
                if (row.window_bits, mwb) not in coders:
                    cfg = replace(comp.cfg, window_bits=row.window_bits, max_window_bytes=mwb)
                    coders[(row.window_bits, mwb)] = comp.sibling(cfg)
                windows_by[key] = (coders[(row.window_bits, mwb)].encode_segments(data, u_off), mwb)
            win, mwb = windows_by[key]
            packed = pack(win, CoderConfig(row.window_bits, row.symbol_bits, mwb))
            per_seg = np.diff(packed.sym_off)
            info["windows_per_segment"] = float((np.diff(win.win_off) * occ).sum() / occ.sum())
        else:
            cum, freq = stream_ints(comp, data, u_off)
            streams = encode_streams(data, cum, freq, u_off)
            per_seg = np.diff(pack_streams(streams, row.symbol_bits).sym_off)
            info["bits_per_segment"] = float((streams.bit_len * occ).sum() / occ.sum())
            k = min(verify_segments, len(occ))
            if k:
                sub_off = u_off[: k + 1]
                sub = data[: sub_off[-1]]
                table = stream_ints(comp, sub, sub_off, tables=True)
                part = encode_streams(sub, cum[: len(sub)], freq[: len(sub)], sub_off)
                info["decoded_segments"] = int(k) if (decode_streams(table, part, sub_off) == sub).all() else -1
        symbols = int((per_seg * occ).sum())
        out_rows.append({
            "segmenter": row.segmenter, "window_bits": row.window_bits or None, "symbol_bits": row.symbol_bits,
            "bytes_per_symbol": total / symbols, "paper_bytes_per_symbol": row.paper_bytes_per_symbol,
            "symbols": symbols, "segments": int(occ.sum()), "distinct_segments": int(len(occ)),
            "mean_segment_bytes": total / max(1, int(occ.sum())), "seconds": round(time.perf_counter() - t, 2), **info,
        })
    return {"bytes": total, "documents": len(docs), "rows": out_rows,
            "thresholds": {str(p): {"theta_abs": th.theta_abs, "theta_jump": th.theta_jump} for p, th in thresholds.items()},
            "model": comp.fingerprint, "precision": comp.precision.value, "seconds": round(time.perf_counter() - t0, 2)}
