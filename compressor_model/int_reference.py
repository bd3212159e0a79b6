"""The int8 compressor model in plain NumPy int64, one sequence at a time: the oracle
the torch path (`intmodel`, `intmath`) must equal bit for bit, and the place to read
the integer format. No float appears after the tables were built, matrix products
are int64 (exact), and every rounding is written out.

    ref = IntReference(IntByteLM.state_dict(), cfg)
    logits = ref.logits(tokens)           # [T, 256]: position t sees tokens[: t + 1]
    ref.frequencies(logits[-1]), ref.entropy(logits)

With exact=True every value is a Python integer (object arrays): nothing can overflow,
so equality with the int64 torch path shows that it did not overflow either.
"""

from __future__ import annotations

import math

import numpy as np

from . import intmath as im


def rshift_round(x, sh):
    """x / 2**sh rounded half up: floor(x / 2**sh + 1/2)."""
    sh = np.asarray(sh, x.dtype)
    return ((2 * x) + np.left_shift(np.ones_like(sh), sh)) >> (sh + 1)


def row_quant(z):
    """z ~ q * 2**e per row, e the least with max|z| <= 127 * 2**e."""
    amax = np.abs(z).max(-1, keepdims=True)
    e = (amax > np.array(im.ROW_LIMITS, z.dtype)).sum(-1, keepdims=True).astype(z.dtype)
    return rshift_round(z, e), e


def layer_norm(x):
    C = x.shape[-1]
    d = x - x.sum(-1, keepdims=True) // C
    var = (d * d).sum(-1, keepdims=True) // C
    std = np.array([max(1, math.isqrt(int(v))) for v in var.ravel()], x.dtype).reshape(var.shape)
    return (d << im.FRAC) // std


class IntReference:
    def __init__(self, state: dict, cfg, exact: bool = False):
        self.dtype = object if exact else np.int64
        self.w = {k: v.cpu().numpy().astype(np.int64).astype(self.dtype) for k, v in state.items()}
        self.cfg = cfg
        self.mult = im.score_mult(cfg.n_embd // cfg.n_head)

    def linear(self, x, name):  # x int64 [T, K] -> [T, N]
        q, e = row_quant(x)
        w = self.w
        acc = q @ w[name + "_w"]
        return rshift_round(acc * w[name + "_m"], np.maximum(w[name + "_s"] - e, 1)) + w[name + "_b"]

    def exp2(self, t, drop=0):  # 2**(30 - drop - t/256) floored, t >= 0
        n = np.minimum((t >> im.LOG_FRAC) + drop, 62)
        return self.w["exp2"][(t & 255).astype(np.int64)] >> n

    def attention(self, x, i):  # [T, C] -> [T, C]
        T, C = x.shape
        h, d = self.cfg.n_head, C // self.cfg.n_head
        qkv = np.clip(self.linear(layer_norm(x), f"b{i}_attn"), -im.ACT_LIMIT, im.ACT_LIMIT)
        y = np.zeros((T, C), self.dtype)
        for head in range(h):
            q8, eq = row_quant(qkv[:, head * d : (head + 1) * d])
            k8, ek = row_quant(qkv[:, C + head * d : C + (head + 1) * d])
            v = qkv[:, 2 * C + head * d : 2 * C + (head + 1) * d]
            for t in range(T):  # query t reads keys 0..t
                s = rshift_round((k8[: t + 1] @ q8[t]) * self.mult, im.SCORE_SHIFT - eq[t] - ek[: t + 1, 0])
                p = self.exp2(s.max() - s, im.EXP_BITS - im.ATTN_BITS)
                z = p.sum()
                y[t, head * d : (head + 1) * d] = (2 * (p @ v[: t + 1]) + z) // (2 * z)
        return y

    def logits(self, tokens) -> np.ndarray:
        """int64 [T, 256] next-byte logits (log2 units / 256) of a token sequence."""
        w, T = self.w, len(tokens)
        x = w["wte"][np.asarray(tokens, np.int64)] + w["wpe"][:T]
        for i in range(self.cfg.n_layer):
            x = np.clip(x + self.linear(self.attention(x, i), f"b{i}_proj"), -im.RES_LIMIT, im.RES_LIMIT)
            hid = np.clip(self.linear(layer_norm(x), f"b{i}_fc"), -im.ACT_LIMIT, im.ACT_LIMIT)
            idx = np.clip(rshift_round(hid, im.FRAC - im.PHI_STEP), -im.PHI_HALF, im.PHI_HALF) + im.PHI_HALF
            g = rshift_round(hid * w["phi"][idx.astype(np.int64)], im.PHI_BITS)  # GELU: x Phi(x)
            x = np.clip(x + self.linear(g, f"b{i}_mproj"), -im.RES_LIMIT, im.RES_LIMIT)
        return self.linear(layer_norm(x), "head")

    def frequencies(self, logits) -> np.ndarray:
        """One row of logits -> 256 frequencies summing to 2**16."""
        p = self.exp2(logits.max() - logits)
        f = 1 + p * (im.PROB_TOTAL - 256) // p.sum()
        f[int(np.argmax(f))] += im.PROB_TOTAL - f.sum()  # argmax: the first of equals
        return f

    def entropy(self, logits) -> np.ndarray:
        """Entropy (bits * 2**16) of each row: log2 Z - 30 + sum(p t) / (256 Z)."""
        out = []
        for row in np.atleast_2d(logits):
            t = row.max() - row
            p = self.exp2(t)
            z = int(p.sum())
            e = z.bit_length() - 1
            log_z = (e << im.ENTROPY_FRAC) + int(self.w["log2"][(z >> (e - im.LOG_MANTISSA)) - (1 << im.LOG_MANTISSA)])
            out.append(log_z - (im.EXP_BITS << im.ENTROPY_FRAC) + (int((p * t).sum()) << (im.ENTROPY_FRAC - im.LOG_FRAC)) // z)
        return np.array(out, np.int64)
