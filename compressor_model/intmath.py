"""The integer format of the compressor model (INT_FORMAT): constants, tables, and the
torch operations the int8 model is built from.

Every operation here is integer arithmetic whose result is fixed by its inputs: sums
of integers do not depend on their order, `>>` is a floor, divisions are floor
divisions. Where float arithmetic is cheaper (the two batched products of attention,
the scores, requantization) it runs on integers times powers of two whose every
product and partial sum stays within the format's exact range (2**24 units for
float32, 2**53 for float64), so no rounding ever happens and the order of summation
cannot matter. Hence a result is the same on every CPU, GPU, thread count and kernel
library: `int_reference` recomputes it in NumPy int64 as the oracle.

Fixed point: the residual stream, LayerNorm outputs and linear outputs hold value *
2**FRAC; logits and attention scores are base-2 logarithms in 1/2**LOG_FRAC. Clamps
(RES_LIMIT, ACT_LIMIT) bound every intermediate; the bounds each product relies on
are written beside it and checked with the paper40m shapes in tests/unit/test_intmodel.py.
"""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import torch

INT_FORMAT = 1  # bump when any constant, table or operation below changes a result

FRAC = 12
LOG_FRAC = 8
RES_LIMIT = 1 << 24  # |residual| < 4096.0: keeps LayerNorm's sum of squares < 2**61
ACT_LIMIT = 1 << 20  # |q|, |k|, |v|, |MLP hidden| < 256.0: keeps attention sums < 2**53
SCORE_SHIFT = 32  # scores: (dot * mult) >> (SCORE_SHIFT - e_q - e_k); e_q, e_k <= 13, mult < 2**15
EXP_BITS = 30  # EXP2[f] = 2**(30 - f/256)
ATTN_BITS = 15  # attention weights in Q15: 2**15 for the best key
ATTN_SPAN = (EXP_BITS - ATTN_BITS + 1) << LOG_FRAC  # score gaps from here on weigh 0
PHI_STEP = 6  # GELU table: Phi at multiples of 1/64 ...
PHI_HALF = 512  # ... over [-8, 8]
PHI_BITS = 15
LOG_MANTISSA = 10  # log2 table: 1024 entries of log2(1 + i/1024) in Q16
ENTROPY_FRAC = 16
PROB_TOTAL, ALPHABET = 1 << 16, 256  # as coder.constants
_SPREAD = PROB_TOTAL - ALPHABET

ROW_LIMITS = [127 << k for k in range(41)]  # row exponent e: the least with max|z| <= 127 * 2**e


# -- tables (exact: decimal arithmetic at 40 digits, then one rounding) ---------------

def _round(d: Decimal) -> int:
    return int(d.to_integral_value())  # half-even


def exp2_table() -> list[int]:
    getcontext().prec = 40
    ln2 = Decimal(2).ln()
    return [_round(((EXP_BITS - Decimal(f) / (1 << LOG_FRAC)) * ln2).exp()) for f in range(1 << LOG_FRAC)]


def _erf(x: Decimal) -> Decimal:
    # Maclaurin series; |x| <= 5.7 here, where 40 digits leave ~20 after cancellation.
    term, total, n = x, x, 0
    while abs(term) > Decimal(10) ** -30:
        n += 1
        term = -term * x * x / n
        total += term / (2 * n + 1)
    pi = Decimal("3.141592653589793238462643383279502884197")
    return 2 * total / pi.sqrt()


def phi_table() -> list[int]:
    """Phi(x) = P(N(0,1) < x) at x = i / 64, i in -512..512, in Q15: GELU(x) = x Phi(x)."""
    getcontext().prec = 40
    half_sqrt2 = Decimal(2).sqrt() / 2
    return [_round((1 + _erf(Decimal(i) / (1 << PHI_STEP) * half_sqrt2)) / 2 * (1 << PHI_BITS))
            for i in range(-PHI_HALF, PHI_HALF + 1)]


def log2_table() -> list[int]:
    getcontext().prec = 40
    ln2 = Decimal(2).ln()
    n = 1 << LOG_MANTISSA
    return [_round((1 + Decimal(i) / n).ln() / ln2 * (1 << ENTROPY_FRAC)) for i in range(n)]


LOG2_E = 1.4426950408889634  # 1 / ln 2, the float64 nearest


def score_mult(head_dim: int) -> int:
    """Scores in LOG_FRAC log2 units from q8 . k8: dot * 2**(e_q + e_k - 2 FRAC) * log2(e) /
    sqrt(head_dim), as (dot * mult) >> (SCORE_SHIFT - e_q - e_k)."""
    return round(LOG2_E / math.sqrt(head_dim) * 2.0 ** (LOG_FRAC - 2 * FRAC + SCORE_SHIFT))


# -- operations -----------------------------------------------------------------------

def bit_length(n: torch.Tensor) -> torch.Tensor:
    """Bits of each int64 0 <= n < 2**53 (0 for 0): the exponent field of the exact
    float64 value (1023 + bits - 1 for n >= 1, 0 for n = 0)."""
    return (torch.bitwise_right_shift(n.double().view(torch.int64), 52) - 1022).clamp(min=0)


def round_shift(x: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """x / 2**sh rounded half up (sh >= 0, an int64 tensor, broadcast):
    (x + 2**(sh-1)) >> sh, and x itself for sh = 0."""
    return torch.bitwise_right_shift(x + ((1 << sh) >> 1), sh)


def round_shift_by(x: torch.Tensor, sh: int) -> torch.Tensor:
    """round_shift by a constant sh >= 1."""
    return (x + (1 << (sh - 1))) >> sh


def floor_div(a: torch.Tensor, b) -> torch.Tensor:
    """floor(a / b), b > 0, |a| < 2**62 and |a / b| < 2**50. By a constant: integer
    division. By a tensor: the float64 quotient (within 1 of the true one in these
    ranges) corrected by the exact integer remainder, because torch.compile's
    vectorized integer division can fault on the padding lanes of a tensor divisor."""
    if not isinstance(b, torch.Tensor):
        return torch.div(a, b, rounding_mode="floor")
    q = torch.floor(a.double() / b.double()).long()
    r = a - q * b
    return q - (r < 0).long() + (r >= b).long()


def row_quant(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 [..., K] -> (int8 [..., K], e int64 [..., 1]): z ~ q * 2**e, e the least
    exponent that fits max|z| in 127 (rounding cannot pass 127: |z| / 2**e <= 127)."""
    amax = z.abs().amax(-1, keepdim=True)
    e = bit_length(floor_div(amax + 126, 127) - 1)  # ceil(amax / 127) <= 2**e
    return round_shift(z, e).to(torch.int8), e


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(v)) of int64 v < 2**52: float64 sqrt of the exact input. IEEE sqrt is
    correctly rounded and monotone, so it is never below the integer root; it can round
    up to the next integer only, which the one correction undoes."""
    r = torch.sqrt(v.double()).long()
    return r - (r * r > v).long()


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std in FRAC fixed point, without gain or bias (both are folded into
    the next linear). |x| < RES_LIMIT: |d| < 2**25, sum of C <= 2**11 squares < 2**61."""
    C = x.shape[-1]
    d = x - floor_div(x.sum(-1, keepdim=True), C)
    std = isqrt(floor_div((d * d).sum(-1, keepdim=True), C)).clamp(min=1)
    return floor_div(d << FRAC, std)


def gelu(h: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """x Phi(x) with Phi from the table at the nearest 1/64 (0 or 1 beyond +-8)."""
    idx = ((h + ((PHI_HALF << (FRAC - PHI_STEP)) + (1 << (FRAC - PHI_STEP - 1)))) >> (FRAC - PHI_STEP)).clamp(0, 2 * PHI_HALF)
    return round_shift_by(h * phi[idx], PHI_BITS)


def exp2_neg(t: torch.Tensor, exp2: torch.Tensor, drop: int = 0) -> torch.Tensor:
    """2**(EXP_BITS - drop - t / 2**LOG_FRAC), floored, for t >= 0."""
    n = (torch.bitwise_right_shift(t, LOG_FRAC) + drop).clamp(max=62)
    return torch.bitwise_right_shift(exp2[t & ((1 << LOG_FRAC) - 1)], n)


def attention_table(exp2: torch.Tensor) -> torch.Tensor:
    """exp2_neg(t, exp2, EXP_BITS - ATTN_BITS) for t in 0..ATTN_SPAN, 0 at ATTN_SPAN and
    beyond (2**(15 - 16) floors to 0): attention weights in one lookup."""
    t = torch.arange(ATTN_SPAN + 1, device=exp2.device)
    return exp2_neg(t, exp2, EXP_BITS - ATTN_BITS)


def pow2(e: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """2.0**e, exact, for int64 e within the format's normal range: written as its
    exponent bits (an exp2 kernel may round)."""
    if dtype == torch.float32:
        return torch.bitwise_left_shift(e + 127, 23).to(torch.int32).view(torch.float32)
    return torch.bitwise_left_shift(e + 1023, 52).view(torch.float64)


def attention(q, k, v, visible, mult: int, weights: torch.Tensor) -> torch.Tensor:
    """Causal attention of queries on keys, all integers.

    q [B, h, T, d] = q8 * 2**(e_q - SCORE_SHIFT) and k [B, h, S, d] = k8 * 2**e_k, float32
    (int8 values times their row's power of two: exact); v [B, h, S, d] integers as
    float64 (|v| <= ACT_LIMIT); visible bool [B or 1, 1, T, S], every row with at least
    one key; weights: `attention_table` as float64. Returns int64 [B, h, T, d] in FRAC
    fixed point. A score is (q8 . k8 * mult) >> (SCORE_SHIFT - e_q - e_k), rounded: that
    is floor(q . k * mult + 1/2), and computed so.
    """
    # q . k = (q8 . k8) * 2**(e_q + e_k - 32): |q8 . k8| <= 127**2 * d < 2**24 (d <= 1024)
    # in units of one power of two, exact in float32 whatever the kernel or order.
    dot = torch.matmul(q, k.transpose(-1, -2)).double()  # [B, h, T, S]
    # dot * mult: < 2**39 units, exact in float64; e_q + e_k <= 26 < 32, so the + 1/2
    # and the floor are exact too (an FMA gives the same number).
    s = torch.where(visible, torch.floor(dot * mult + 0.5), -(2.0 ** 60))
    t = (s.amax(-1, keepdim=True) - s).clamp(max=ATTN_SPAN).int()  # not visible: ATTN_SPAN, weight 0
    p = weights[t]  # Q15: 2**15 for the best key
    z = p.sum(-1, keepdim=True).long()  # < 2**15 * 2**10, exact
    # p <= 2**15, |v| <= 2**20, S <= 2**10 keys: |p @ v| < 2**45, exact in float64.
    pv = torch.matmul(p, v).long()
    return floor_div(2 * pv + z, 2 * z)


def _probs(logits: torch.Tensor, exp2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = logits.amax(-1, keepdim=True) - logits
    p = exp2_neg(t, exp2)  # Q30 for the top byte
    return p, p.sum(-1, keepdim=True), t


def frequencies(logits: torch.Tensor, exp2: torch.Tensor) -> torch.Tensor:
    """int64 [..., 256] logits (LOG_FRAC log2 units) -> int64 frequencies summing to
    PROB_TOTAL: f = 1 + floor(p * (PROB_TOTAL - 256)), the remainder to the most likely
    byte (the lowest on ties), as `coder.quantize` defines it for float probabilities."""
    p, z, _ = _probs(logits, exp2)
    f = 1 + floor_div(p * _SPREAD, z)  # p * _SPREAD < 2**46
    rest = PROB_TOTAL - f.sum(-1, keepdim=True)
    ramp = torch.arange(ALPHABET - 1, -1, -1, device=f.device)
    top = (ALPHABET - 1) - torch.remainder((f * ALPHABET + ramp).amax(-1, keepdim=True), ALPHABET)
    return f.scatter_add(-1, top, rest)


def entropy(logits: torch.Tensor, exp2: torch.Tensor, log2: torch.Tensor) -> torch.Tensor:
    """Entropy in bits * 2**ENTROPY_FRAC (int64 [...]) of the distribution `frequencies`
    quantizes: log2 Z - 30 + sum(p t) / (2**LOG_FRAC Z), with p = 2**(30 - t/256)."""
    p, z, t = _probs(logits, exp2)
    e = bit_length(z) - 1  # floor(log2 z), 2**30 <= z < 2**39
    mant = torch.bitwise_right_shift(z, e - LOG_MANTISSA) - (1 << LOG_MANTISSA)
    log_z = (e << ENTROPY_FRAC) + log2[mant]
    # p > 0 only where t < 31 * 256: sum(p t) < 2**51.
    spread = floor_div((p * t).sum(-1, keepdim=True) << (ENTROPY_FRAC - LOG_FRAC), z)
    return (log_z - (EXP_BITS << ENTROPY_FRAC) + spread)[..., 0]


def coding_ints(freq: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cumulative frequency, frequency) of each target byte, int32."""
    idx = targets.long().unsqueeze(-1)
    f = freq.gather(-1, idx)
    cum = freq.cumsum(-1).gather(-1, idx) - f
    return cum.squeeze(-1).to(torch.int32), f.squeeze(-1).to(torch.int32)


# -- the int8 matrix product ----------------------------------------------------------

# CUDA's int8 GEMM (torch._int_mm through cuBLASLt) refuses m <= 16 and k or n not a
# multiple of 8. The CPU accepts any shape: checking here makes a CPU run fail where a
# CUDA run would.
MM_MIN_ROWS = 17
MM_MULTIPLE = 8
# On x86 CPUs without VNNI, oneDNN computes s8 x s8 as (a + 128) u8 x b s8 with
# vpmaddubsw, which adds pairs of products in int16 with saturation: exact only while
# 2 * 255 * |b| <= 32767. Weights (the second operand) are kept within +-64, so the
# product is exact on every CPU (VNNI and AMX accumulate in int32 anyway); measured
# under ONEDNN_MAX_CPU_ISA=SSE41/AVX2/AVX512_CORE in tests/numerics_probe.py.
WEIGHT_MAX = 64


def check_mm_weight(w: torch.Tensor, name: str) -> None:
    if w.dtype != torch.int8 or w.dim() != 2:
        raise ValueError(f"{name}: int8 matrix expected, got {w.dtype} {tuple(w.shape)}")
    k, n = w.shape
    if k % MM_MULTIPLE or n % MM_MULTIPLE:
        raise ValueError(f"{name}: int8 GEMM needs both sides a multiple of {MM_MULTIPLE}, got {k} x {n}")
    if w.numel() and int(w.abs().max()) > WEIGHT_MAX:
        raise ValueError(f"{name}: int8 weights must lie within +-{WEIGHT_MAX} (exact on CPUs without VNNI)")


def mm_int8(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int8 [M, K] @ int8 [K, N] (|w| <= WEIGHT_MAX) -> int32 [M, N], exact
    (|sum| <= 127 * 64 * K < 2**31).
    Rows are padded to MM_MIN_ROWS where fewer (rows never mix, so padding changes
    nothing)."""
    if a.dtype != torch.int8 or a.dim() != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"int8 GEMM: [M, {w.shape[0]}] int8 input expected, got {a.dtype} {tuple(a.shape)}")
    m = a.shape[0]
    if m < MM_MIN_ROWS:
        a = torch.cat([a, a.new_zeros(MM_MIN_ROWS - m, a.shape[1])])
    return torch._int_mm(a, w)[:m]
