"""No windows: one arithmetic-code stream per segment (`CoderConfig(window_bits=0)`).

The paper's ablation (Table 6) without equal-information windows: the coder and the
model context start once per segment, every byte narrows the same interval, and the
segment's code is the shortest bit string whose zero-padded point lies in the final
interval. The arithmetic is the windowed coder's (`r = rng >> 16`, `low += r * c`,
`rng = r * f`, 8-bit renormalisation below 2**54; docs/coder.md), so the pure-Python
`coder.reference.stream_*` functions, which keep the interval as big integers, are the
oracle. Here the interval's settled high bits live in the output buffer as bytes, a
carry from `low` is propagated into them, and `low` keeps the lowest 62 bits.

The decoder needs the segment's byte count (the Parquet's `seg_offsets`) and reads the
code zero-padded, so a segment's packed symbols are enough: padding bits change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .api import Packed, _int_array, check_coding_inputs, check_offsets
from .constants import ALPHABET, PROB_BITS, PROB_TOTAL, RENORM_FLOOR_BITS, RENORM_SHIFT, STATE_BITS, SYMBOL_BITS_CHOICES

_TOP = np.int64(1) << STATE_BITS
_FLOOR = np.int64(1) << RENORM_FLOOR_BITS
_LOW_MASK = (np.int64(1) << (STATE_BITS - RENORM_SHIFT)) - 1
OK, BAD_ROW, BAD_CODE = -1, 0, 1


@dataclass
class Streams:
    """S segments' codes: segment s is bit_len[s] bits, MSB first, in
    bits[byte_off[s]:byte_off[s+1]] (its last byte zero-padded)."""

    bits: np.ndarray  # uint8
    bit_len: np.ndarray  # int64 [S]
    byte_off: np.ndarray  # int64 [S + 1]


@njit(cache=True, nogil=True, inline="always")
def _carry(out, start, j):
    """Add one to the base-256 number out[start:j] (the interval's settled high bits)."""
    j -= 1
    while j >= start:
        out[j] = np.uint8((np.int64(out[j]) + 1) & 0xFF)
        if out[j] != 0:
            return
        j -= 1


@njit(cache=True, nogil=True, inline="always")
def _trailing(out, start, nd, ones):
    """Trailing one (or zero) bits of the digits out[start:start+nd]."""
    n = 0
    for j in range(start + nd - 1, start - 1, -1):
        d = np.int64(out[j])
        for b in range(8):
            if ((d >> b) & 1) != (1 if ones else 0):
                return n
            n += 1
    return n


@njit(cache=True, nogil=True)
def encode_stream_kernel(cum, freq, seg_off, out, byte_off, bit_len):
    pos = 0
    for s in range(seg_off.shape[0] - 1):
        start = pos
        byte_off[s] = start
        if seg_off[s + 1] == seg_off[s]:
            bit_len[s] = 0
            continue
        nd = 0
        low = np.int64(0)
        rng = _TOP
        for i in range(seg_off[s], seg_off[s + 1]):
            r = rng >> PROB_BITS
            low += r * cum[i]
            rng = r * freq[i]
            if low >= _TOP:
                low -= _TOP
                _carry(out, start, start + nd)
            while rng < _FLOOR:
                out[start + nd] = np.uint8(low >> (STATE_BITS - RENORM_SHIFT))
                nd += 1
                low = (low & _LOW_MASK) << RENORM_SHIFT
                rng <<= RENORM_SHIFT
        # The shortest code: the coarsest grid 2**m (m <= total - 1 bits) that has a point
        # in [L, L + rng), L = digits * 2**62 + low; d is the distance from L up to it.
        total = STATE_BITS + RENORM_SHIFT * nd
        m = min(STATE_BITS, total - 1)
        d = np.int64(0)
        while m > 0:
            mask = (np.int64(1) << m) - 1
            d = ((np.int64(1) << m) - (low & mask)) & mask
            if d < rng:
                break
            m -= 1
        if m == 0:
            d = np.int64(0)
        if nd and m == STATE_BITS:  # coarser grids reach into the digits
            if low == 0:
                m = min(total - 1, STATE_BITS + _trailing(out, start, nd, False))
                d = np.int64(0)
            elif _TOP - low < rng:
                m = min(total - 1, STATE_BITS + _trailing(out, start, nd, True))
                d = _TOP - low
        low += d
        if low >= _TOP:
            low -= _TOP
            _carry(out, start, start + nd)
        k = total - m
        bit_len[s] = k
        nbytes = (k + 7) // 8
        if k > RENORM_SHIFT * nd:  # some of low's bits too
            extra = k - RENORM_SHIFT * nd
            v = low >> (STATE_BITS - extra)
            pad = 8 * ((extra + 7) // 8) - extra
            v <<= pad
            for b in range((extra + 7) // 8):
                out[start + nd + b] = np.uint8((v >> (8 * ((extra + 7) // 8 - 1 - b))) & 0xFF)
        else:
            keep = k - 8 * (nbytes - 1)  # bits of the last byte that belong to the code
            out[start + nbytes - 1] = np.uint8(np.int64(out[start + nbytes - 1]) & (0xFF << (8 - keep)) & 0xFF)
        pos = start + nbytes
    byte_off[seg_off.shape[0] - 1] = pos
    return pos


@njit(cache=True, nogil=True, inline="always")
def _bits(code, first, nbytes, p, n):
    """n (<= 62) bits of a zero-padded code from bit p, as an integer."""
    v = np.int64(0)
    for b in range(p, p + n):
        byte = b >> 3
        bit = 0
        if byte < nbytes:
            bit = (np.int64(code[first + byte]) >> (7 - (b & 7))) & 1
        v = (v << 1) | bit
    return v


@njit(cache=True, nogil=True)
def decode_stream_kernel(freq, bits, byte_off, seg_off, out):
    for s in range(seg_off.shape[0] - 1):
        first = byte_off[s]
        nbytes = byte_off[s + 1] - first
        offset = _bits(bits, first, nbytes, 0, STATE_BITS)  # the code point minus the interval's low end
        p = STATE_BITS
        rng = _TOP
        for i in range(seg_off[s], seg_off[s + 1]):
            total = 0
            for a in range(ALPHABET):
                if freq[i, a] < 1:
                    return BAD_ROW, i
                total += freq[i, a]
            if total != PROB_TOTAL:
                return BAD_ROW, i
            r = rng >> PROB_BITS
            q = offset // r
            if q >= PROB_TOTAL:
                return BAD_CODE, s
            c = 0
            sym = 0
            while c + freq[i, sym] <= q:
                c += freq[i, sym]
                sym += 1
            offset -= r * c
            rng = r * freq[i, sym]
            out[i] = sym
            while rng < _FLOOR:
                offset = (offset << RENORM_SHIFT) | _bits(bits, first, nbytes, p, RENORM_SHIFT)
                p += RENORM_SHIFT
                rng <<= RENORM_SHIFT
    return OK, -1


def encode_streams(data, cum, freq, seg_off) -> Streams:
    """One code per segment (no windows). data: uint8 [N]; cum, freq: [N] each byte's
    cumulative frequency and frequency (`coder.quantize`); seg_off: [S + 1] offsets."""
    data, cum, freq, seg_off = check_coding_inputs(data, cum, freq, seg_off, np.int64)
    n = data.shape[0]
    n_seg = seg_off.shape[0] - 1
    out = np.zeros(2 * n + 9 * n_seg + 16, np.uint8)  # a byte adds at most 16 bits; a code's end at most 9 bytes
    byte_off = np.zeros(n_seg + 1, np.int64)
    bit_len = np.zeros(n_seg, np.int64)
    used = encode_stream_kernel(cum, freq, seg_off, out, byte_off, bit_len)
    return Streams(out[:used].copy(), bit_len, byte_off)


def decode_streams(freq, streams: Streams, seg_off) -> np.ndarray:
    """Bytes back from one code per segment, given every position's [N, 256] frequencies."""
    freq = _int_array("freq", freq, 2, np.int32)
    if freq.shape[1] != ALPHABET:
        raise ValueError(f"freq: expected shape [N, {ALPHABET}], got {freq.shape}")
    seg_off = check_offsets("seg_off", seg_off, freq.shape[0])
    bits = _int_array("bits", streams.bits, 1, np.uint8)
    byte_off = check_offsets("byte_off", streams.byte_off, bits.shape[0])
    if byte_off.shape[0] != seg_off.shape[0]:
        raise ValueError(f"byte_off: expected {seg_off.shape[0]} entries, got {byte_off.shape[0]}")
    out = np.zeros(freq.shape[0], np.uint8)
    status, where = decode_stream_kernel(freq, bits, byte_off, seg_off, out)
    if status == BAD_ROW:
        raise ValueError(f"freq row {where}: frequencies must be >= 1 and sum to {PROB_TOTAL}")
    if status == BAD_CODE:
        raise ValueError(f"segment {where}: its code is not a code of these frequencies")
    return out


def pack_streams(streams: Streams, symbol_bits: int) -> Packed:
    """Each segment's code cut into b-bit symbols (MSB first, the last zero-padded):
    ceil(bit_len / b) symbols, at least one for a non-empty segment."""
    if symbol_bits not in SYMBOL_BITS_CHOICES:
        raise ValueError(f"symbol_bits must be one of {SYMBOL_BITS_CHOICES}, got {symbol_bits}")
    per = symbol_bits // 8
    n_sym = -(-np.asarray(streams.bit_len, np.int64) // symbol_bits)
    sym_off = np.concatenate([[0], np.cumsum(n_sym)]).astype(np.int64)
    raw = np.zeros(int(sym_off[-1]) * per, np.uint8)
    for s in range(n_sym.shape[0]):  # per segment, a slice copy: no per-bit work here
        a, b = int(streams.byte_off[s]), int(streams.byte_off[s + 1])
        raw[sym_off[s] * per : sym_off[s] * per + (b - a)] = streams.bits[a:b]
    symbols = raw if per == 1 else raw.reshape(-1, 2)[:, 0].astype(np.uint16) << 8 | raw.reshape(-1, 2)[:, 1]
    return Packed(symbols.astype(np.uint16), sym_off)


def unpack_streams(packed: Packed, symbol_bits: int) -> Streams:
    """Codes back from symbols (with their padding bits, which decode the same)."""
    if symbol_bits not in SYMBOL_BITS_CHOICES:
        raise ValueError(f"symbol_bits must be one of {SYMBOL_BITS_CHOICES}, got {symbol_bits}")
    symbols = _int_array("symbols", packed.symbols, 1, np.uint16)
    sym_off = check_offsets("sym_off", packed.sym_off, symbols.shape[0])
    if symbol_bits == 8:
        if symbols.size and symbols.max() > 0xFF:
            raise ValueError("symbols: 8-bit symbols must be below 256")
        bits = symbols.astype(np.uint8)
    else:
        bits = np.stack([(symbols >> 8).astype(np.uint8), (symbols & 0xFF).astype(np.uint8)], 1).reshape(-1)
    per = symbol_bits // 8
    return Streams(bits, np.diff(sym_off) * symbol_bits, sym_off * per)
