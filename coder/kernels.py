"""Numba kernels of the equal-information arithmetic coder.

Arrays in, arrays out, no Python objects: every kernel is compiled with nogil=True so
a worker can run several of them in threads, and cache=True so each machine compiles
them once. Callers go through `coder.api`, which checks dtypes and shapes.

The window rule (docs/coder.md has the full derivation):

* A window starts with the interval [0, 2**62) (`STATE_BITS`). Coding a byte with
  cumulative frequency c and frequency f narrows [low, low + rng) to
  [low + r*c, low + r*c + r*f) with r = rng >> PROB_BITS.
* The window's code is the W-bit value v whose zero-padded position v * 2**G
  (G = 62 - W) is the smallest such point >= low. A byte fits the window when that
  point stays inside the narrowed interval. Fitting is monotone, so the window is the
  longest prefix that fits (greedy = maximal); the first byte that does not fit starts
  the next window.
* Phase 1: while rng >= 2**G some code point is always inside, so nothing is checked.
  Phase 2: once rng < 2**G only the point v can remain; the coder then tracks
  d = v * 2**G - low and rng, both shifted left together (exact) to keep precision.
* A byte that does not fit even an empty window (only possible when W < PROB_BITS)
  becomes an escape window: code = the raw byte, byte count = 0 (ESCAPE_COUNT).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .constants import (
    PROB_BITS,
    PROB_TOTAL,
    RENORM_FLOOR_BITS,
    RENORM_SHIFT,
    STATE_BITS,
)

_FULL = np.int64(1) << np.int64(STATE_BITS)
_FLOOR = np.int64(1) << np.int64(RENORM_FLOOR_BITS)
_P = np.int64(PROB_BITS)
_SHIFT = np.int64(RENORM_SHIFT)

OK = -1  # status value of a kernel that found nothing wrong


@njit(cache=True, nogil=True, inline="always")
def _push(phase, low, rng, code, c, f, g):
    """Try to add one byte (c, f) to the window. Returns (fits, phase, low, rng, code);
    when it does not fit the state comes back unchanged. In phase 2 `low` holds d."""
    r = rng >> _P
    if phase == 1:
        lo2 = low + r * c
        r2 = r * f
        one = np.int64(1) << g
        if r2 >= one:
            return True, 1, lo2, r2, code
        v = (lo2 + one - 1) >> g
        d = (v << g) - lo2
        if d >= r2:
            return False, phase, low, rng, code
        while r2 < _FLOOR:
            r2 <<= _SHIFT
            d <<= _SHIFT
        return True, 2, d, r2, v
    t = r * c
    if t > low:
        return False, phase, low, rng, code
    d = low - t
    r2 = r * f
    if d >= r2:
        return False, phase, low, rng, code
    while r2 < _FLOOR:
        r2 <<= _SHIFT
        d <<= _SHIFT
    return True, 2, d, r2, code


@njit(cache=True, nogil=True, inline="always")
def _finish(phase, low, code, g):
    if phase == 1:
        return (low + (np.int64(1) << g) - 1) >> g
    return code


@njit(cache=True, nogil=True)
def encode_kernel(data, cum, freq, seg_off, window_bits, max_window_bytes):
    """Code every segment into windows.

    data/cum/freq: [N] per-position byte, cumulative frequency and frequency;
    seg_off: [S+1] absolute positions (seg_off[0] may be > 0).
    Returns codes uint32 [n_windows], counts int32 [n_windows], win_off int64 [S+1]
    (win_off relative to the returned arrays). Output arrays are sized for the worst
    case (one window per byte) and trimmed by the caller.
    """
    g = np.int64(STATE_BITS - window_bits)
    n_seg = seg_off.shape[0] - 1
    base = seg_off[0]
    total = seg_off[n_seg] - base
    codes = np.empty(total, np.uint32)
    counts = np.empty(total, np.int32)
    win_off = np.empty(n_seg + 1, np.int64)
    w = 0
    for s in range(n_seg):
        win_off[s] = w
        i = seg_off[s]
        end = seg_off[s + 1]
        phase = 1
        low = np.int64(0)
        rng = _FULL
        code = np.int64(0)
        n = 0
        while i < end:
            if n == max_window_bytes:
                codes[w] = _finish(phase, low, code, g)
                counts[w] = n
                w += 1
                phase, low, rng, code, n = 1, np.int64(0), _FULL, np.int64(0), 0
            fits, ph2, lo2, rn2, co2 = _push(
                phase, low, rng, code, np.int64(cum[i]), np.int64(freq[i]), g
            )
            if fits:
                phase, low, rng, code = ph2, lo2, rn2, co2
                n += 1
                i += 1
            elif n == 0:
                codes[w] = data[i]
                counts[w] = 0
                w += 1
                i += 1
            else:
                codes[w] = _finish(phase, low, code, g)
                counts[w] = n
                w += 1
                phase, low, rng, code, n = 1, np.int64(0), _FULL, np.int64(0), 0
        if n > 0:
            codes[w] = _finish(phase, low, code, g)
            counts[w] = n
            w += 1
    win_off[n_seg] = w
    return codes, counts, win_off


@njit(cache=True, nogil=True, inline="always")
def _lookup(row, q):
    """(symbol, cum, freq) of the interval of a frequency row that holds q, or
    (-1, 0, 0) when the row is not a valid distribution (some f < 1, sum != total).
    A linear scan reads the row once, which is also what checking it costs."""
    total = np.int64(0)
    bad = False
    sym = -1
    c = np.int64(0)
    for k in range(row.shape[0]):
        f = np.int64(row[k])
        bad |= f < 1
        if sym < 0 and total + f > q:
            sym = k
            c = total
        total += f
    if bad or total != PROB_TOTAL or sym < 0:
        return -1, c, np.int64(0)
    return sym, c, np.int64(row[sym])


PULL_BAD_ROW = -1  # _pull: the frequency row is not a distribution
PULL_BAD_CODE = -2  # _pull: the code lies outside every byte's interval


@njit(cache=True, nogil=True, inline="always")
def _pull(phase, low, rng, vpos, row, g):
    """Decode one byte of a window whose code sits at vpos = code << g, mirroring
    _push. Returns (byte or PULL_*, phase, low, rng); in phase 2 `low` holds vpos - low."""
    r = rng >> _P
    q = ((vpos - low) if phase == 1 else low) // r
    if q >= PROB_TOTAL:
        return PULL_BAD_CODE, phase, low, rng
    sym, c, f = _lookup(row, q)
    if sym < 0:
        return PULL_BAD_ROW, phase, low, rng
    if phase == 1:
        low += r * c
        rng = r * f
        if rng >= (np.int64(1) << g):
            return sym, 1, low, rng
        phase = 2
        low = vpos - low
    else:
        low -= r * c
        rng = r * f
    while rng < _FLOOR:
        rng <<= _SHIFT
        low <<= _SHIFT
    return sym, phase, low, rng


DECODE_BAD_ROW = 1  # decode_kernel status: a frequency row is not a distribution
DECODE_BAD_WINDOWS = 2  # decode_kernel status: windows do not fit their segment


@njit(cache=True, nogil=True)
def decode_kernel(freq, codes, counts, win_off, seg_off, window_bits, out):
    """Inverse of encode_kernel given every position's frequency row.

    freq: [N, 256] int32, row i for absolute position seg_off[0] + i; writes the bytes
    into out [N]. Returns (OK, 0), (DECODE_BAD_ROW, position) or
    (DECODE_BAD_WINDOWS, segment) for the first problem found.
    """
    g = np.int64(STATE_BITS - window_bits)
    base = seg_off[0]
    n_seg = seg_off.shape[0] - 1
    for s in range(n_seg):
        i = seg_off[s] - base
        end = seg_off[s + 1] - base
        for w in range(win_off[s], win_off[s + 1]):
            n = counts[w]
            if n == 0:
                if i >= end or codes[w] > 255:
                    return DECODE_BAD_WINDOWS, s
                out[i] = codes[w]
                i += 1
                continue
            if n < 0 or i + n > end:
                return DECODE_BAD_WINDOWS, s
            vpos = np.int64(codes[w]) << g
            phase, low, rng = 1, np.int64(0), _FULL
            for _ in range(n):
                sym, phase, low, rng = _pull(phase, low, rng, vpos, freq[i], g)
                if sym == PULL_BAD_ROW:
                    return DECODE_BAD_ROW, i
                if sym < 0:
                    return DECODE_BAD_WINDOWS, s
                out[i] = sym
                i += 1
        if i != end:
            return DECODE_BAD_WINDOWS, s
    return OK, 0


@njit(cache=True, nogil=True)
def pack_kernel(codes, win_off, window_bits, symbol_bits):
    """Concatenate each segment's W-bit codes MSB-first and cut into b-bit symbols;
    a segment's last symbol is zero-padded. Returns symbols uint16, sym_off int64."""
    n_seg = win_off.shape[0] - 1
    n_sym = 0
    for s in range(n_seg):
        n_sym += ((win_off[s + 1] - win_off[s]) * window_bits + symbol_bits - 1) // symbol_bits
    out = np.empty(n_sym, np.uint16)
    sym_off = np.empty(n_seg + 1, np.int64)
    mask = (np.int64(1) << symbol_bits) - 1
    k = 0
    for s in range(n_seg):
        sym_off[s] = k
        acc = np.int64(0)
        nacc = 0
        for w in range(win_off[s], win_off[s + 1]):
            acc = (acc << window_bits) | np.int64(codes[w])
            nacc += window_bits
            while nacc >= symbol_bits:
                nacc -= symbol_bits
                out[k] = (acc >> nacc) & mask
                k += 1
            acc &= (np.int64(1) << nacc) - 1
        if nacc > 0:
            out[k] = (acc << (symbol_bits - nacc)) & mask
            k += 1
    sym_off[n_seg] = k
    return out, sym_off


@njit(cache=True, nogil=True)
def unpack_kernel(symbols, sym_off, windows_per_seg, window_bits, symbol_bits):
    """Inverse of pack_kernel. Returns codes uint32, win_off int64, and OK or the first
    segment whose symbol count does not match its window count."""
    n_seg = sym_off.shape[0] - 1
    win_off = np.empty(n_seg + 1, np.int64)
    total = 0
    for s in range(n_seg):
        win_off[s] = total
        total += windows_per_seg[s]
    win_off[n_seg] = total
    codes = np.zeros(total, np.uint32)
    wmask = (np.int64(1) << window_bits) - 1
    for s in range(n_seg):
        need = (windows_per_seg[s] * window_bits + symbol_bits - 1) // symbol_bits
        if sym_off[s + 1] - sym_off[s] != need:
            return codes, win_off, s
        acc = np.int64(0)
        nacc = 0
        w = win_off[s]
        for k in range(sym_off[s], sym_off[s + 1]):
            acc = (acc << symbol_bits) | np.int64(symbols[k])
            nacc += symbol_bits
            while nacc >= window_bits and w < win_off[s + 1]:
                nacc -= window_bits
                codes[w] = (acc >> nacc) & wmask
                w += 1
            acc &= (np.int64(1) << nacc) - 1
    return codes, win_off, OK
