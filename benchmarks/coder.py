"""Coder benchmark: `python -m benchmarks.coder --json`.

Everything is measured in one run on the same synthetic, model-like data: N positions
with softmax-of-Gaussian distributions whose spread is tuned so the mean entropy is
about 2 bits/byte, and bytes drawn from those distributions, cut into segments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from coder import api
from coder.constants import PROB_TOTAL
from coder.quantize import quantize

QUANT_BATCH = 8192


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log2(p.clamp_min(1e-30))).sum(-1)


def model_like_probs(n: int, target_bits: float, seed: int) -> torch.Tensor:
    """[n, 256] float32 distributions with mean entropy close to target_bits."""
    gen = torch.Generator().manual_seed(seed)
    spread = torch.exp(0.6 * torch.randn(n, 1, generator=gen))  # per-position sharpness
    z = torch.randn(n, 256, generator=gen)
    sample = slice(0, min(n, 20000))
    lo, hi = 0.1, 20.0
    for _ in range(30):  # bisection on a global temperature
        mid = (lo + hi) / 2
        h = _entropy_bits(torch.softmax(z[sample] * spread[sample] * mid, -1)).mean().item()
        lo, hi = (mid, hi) if h > target_bits else (lo, mid)
    return torch.softmax(z * spread * ((lo + hi) / 2), -1)


def sample_bytes(freq: torch.Tensor, seed: int) -> torch.Tensor:
    """One byte per row drawn exactly from the quantized distribution."""
    gen = torch.Generator().manual_seed(seed + 1)
    u = torch.randint(0, PROB_TOTAL, (freq.shape[0], 1), generator=gen, dtype=torch.int32)
    cdf = freq.cumsum(-1, dtype=torch.int32)
    return (cdf <= u).sum(-1).to(torch.uint8)


def segment_offsets(n: int, mean_len: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lens = rng.geometric(1.0 / mean_len, size=n // max(mean_len, 1) * 2 + 16)
    off = np.concatenate([[0], np.cumsum(lens)])
    off = off[off < n]
    return np.concatenate([off, [n]]).astype(np.int64)


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(n: int, window_bits: int, mean_segment: int, repeat: int, seed: int, constriction: bool) -> dict:
    torch.set_num_threads(1)  # single-core figures throughout
    cfg = api.CoderConfig(window_bits=window_bits)
    probs = model_like_probs(n, 2.0, seed)
    # Batches the size an engine step would quantize on one core.
    t_quant = best_time(lambda: [quantize(probs[i : i + QUANT_BATCH]) for i in range(0, n, QUANT_BATCH)], repeat)
    freq = torch.cat([quantize(probs[i : i + QUANT_BATCH]) for i in range(0, n, QUANT_BATCH)])
    data_t = sample_bytes(freq, seed)
    idx = data_t.long().unsqueeze(-1)
    f_t = freq.gather(-1, idx).squeeze(-1)
    cum_t = torch.cat(
        [freq[i : i + QUANT_BATCH].cumsum(-1, dtype=torch.int32) for i in range(0, n, QUANT_BATCH)]
    ).gather(-1, idx).squeeze(-1) - f_t
    data, cum, f = data_t.numpy(), cum_t.numpy(), f_t.numpy()
    seg_off = segment_offsets(n, mean_segment, seed)

    api.encode(data[:1000], cum[:1000], f[:1000], np.array([0, 1000]), cfg)  # compile/load
    t_enc = best_time(lambda: api.encode(data, cum, f, seg_off, cfg), repeat)
    t_enc2 = best_time(lambda: api.encode(data, cum, f, seg_off, cfg, threads=2), repeat)
    win = api.encode(data, cum, f, seg_off, cfg)

    freq_np = freq.numpy()
    t_dec = best_time(lambda: api.decode(freq_np, win, seg_off, cfg), 1)
    decoded = api.decode(freq_np, win, seg_off, cfg)
    lossless = bool(np.array_equal(decoded, data))

    info = -np.log2(f.astype(np.float64) / PROB_TOTAL)  # quantized information per byte
    counts = win.counts.astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(np.maximum(counts, 1))[:-1]])
    per_window = np.add.reduceat(info, starts) if len(starts) else np.zeros(0)
    # A window is "full" when it closed because the next byte did not fit, i.e. it is
    # not the last window of its segment and not an escape.
    last = np.zeros(len(counts), bool)
    last[win.win_off[1:][np.diff(win.win_off) > 0] - 1] = True
    full = ~last & (counts > 0)
    mean_info = float(info.mean())

    out = {
        "n_bytes": n,
        "window_bits": window_bits,
        "symbol_bits": cfg.symbol_bits,
        "mean_segment_bytes": float(n / (len(seg_off) - 1)),
        "mean_entropy_bits": float(_entropy_bits(probs[:20000]).mean()),
        "mean_quantized_info_bits": mean_info,
        "encode_mb_s": n / t_enc / 1e6,
        "encode_2threads_mb_s": n / t_enc2 / 1e6,
        "decode_mb_s": n / t_dec / 1e6,
        "quantize_mb_s": n / t_quant / 1e6,
        "quantize_batch_rows": QUANT_BATCH,
        "bytes_per_window": n / len(counts),
        "ideal_bytes_per_window": window_bits / mean_info,
        "full_window_bytes": float(counts[full].mean()),
        "overhead_bits_per_window": float(window_bits - per_window[full].mean()),
        "escapes": int((counts == 0).sum()),
        "lossless": lossless,
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    if constriction:
        out.update(_constriction(probs, data, repeat, out["encode_mb_s"]))
    return out


def _constriction(probs: torch.Tensor, data: np.ndarray, repeat: int, ours_mb_s: float) -> dict:
    import constriction

    rows = np.ascontiguousarray(probs.numpy(), dtype=np.float32)
    msg = data.astype(np.int32)
    family = constriction.stream.model.Categorical(perfect=False)

    def enc():
        e = constriction.stream.queue.RangeEncoder()
        e.encode(msg, family, rows)
        return e

    t = best_time(enc, max(1, repeat // 2))
    bits = enc().num_bits()
    mb_s = len(data) / t / 1e6
    return {
        "constriction_mb_s": mb_s,
        "constriction_bits_per_byte": bits / len(data),
        "speedup_vs_constriction": ours_mb_s / mb_s,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object (default: indented)")
    ap.add_argument("--bytes", type=int, default=1_000_000)
    ap.add_argument("--window-bits", type=int, default=16)
    ap.add_argument("--mean-segment", type=int, default=256, help="mean segment length in bytes")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-constriction", action="store_true")
    a = ap.parse_args(argv)
    res = run(a.bytes, a.window_bits, a.mean_segment, a.repeat, a.seed, not a.no_constriction)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
