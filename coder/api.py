"""Thin, checked entry points over the Numba kernels.

Every function validates dtypes, shapes and offsets once, then hands contiguous arrays
to a kernel. Errors name the argument and, where it helps, the offending position.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import kernels
from .constants import (
    ALPHABET,
    DEFAULT_SYMBOL_BITS,
    DEFAULT_WINDOW_BITS,
    NO_WINDOWS,
    PROB_TOTAL,
    SYMBOL_BITS_CHOICES,
    WINDOW_BITS_CHOICES,
)

_NO_LIMIT = np.iinfo(np.int32).max


@dataclass(frozen=True)
class CoderConfig:
    window_bits: int = DEFAULT_WINDOW_BITS  # W: bits per equal-information window; 0: none (coder.stream)
    symbol_bits: int = DEFAULT_SYMBOL_BITS  # b: bits per packed output symbol
    max_window_bytes: int = 0  # 0: a window may grow to the end of its segment

    def __post_init__(self):
        if self.window_bits not in (*WINDOW_BITS_CHOICES, NO_WINDOWS):
            raise ValueError(f"window_bits must be one of {WINDOW_BITS_CHOICES}, or {NO_WINDOWS} for none, "
                             f"got {self.window_bits}")
        if self.symbol_bits not in SYMBOL_BITS_CHOICES:
            raise ValueError(f"symbol_bits must be one of {SYMBOL_BITS_CHOICES}, got {self.symbol_bits}")
        if self.max_window_bytes < 0:
            raise ValueError(f"max_window_bytes must be >= 0, got {self.max_window_bytes}")

    @property
    def windowed(self) -> bool:
        return self.window_bits != NO_WINDOWS


@dataclass
class Windows:
    """Equal-information windows of S segments: window w of segment s is index
    win_off[s] + k. counts[w] is the number of bytes it covers (0: escape, one raw byte)."""

    codes: np.ndarray  # uint32 [n_windows]
    counts: np.ndarray  # int32 [n_windows]
    win_off: np.ndarray  # int64 [S + 1]

    @property
    def windows_per_segment(self) -> np.ndarray:
        return np.diff(self.win_off)


def stitch_offsets(parts) -> np.ndarray:
    """Offset arrays of consecutive parts (each [n_i + 1], from 0 to the part's length)
    -> one int64 array [sum n_i + 1] over their concatenation."""
    out, base = [np.zeros(1, np.int64)], 0
    for off in parts:
        off = np.asarray(off, np.int64)
        out.append(off[1:] + base)
        base += int(off[-1])
    return np.concatenate(out)


@dataclass
class Packed:
    symbols: np.ndarray  # uint16 [n_symbols]
    sym_off: np.ndarray  # int64 [S + 1]


def _int_array(name: str, x, ndim: int, dtype) -> np.ndarray:
    a = np.asarray(x)
    if a.size == 0:  # [] arrives as float64; an empty array has no wrong values
        a = a.astype(dtype)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim}-D, got shape {a.shape}")
    if a.dtype != dtype:
        info = np.iinfo(dtype)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise ValueError(f"{name}: values outside the range of {np.dtype(dtype).name}")
        a = a.astype(dtype)
    return np.ascontiguousarray(a)


def check_offsets(name: str, off, n: int) -> np.ndarray:
    off = _int_array(name, off, 1, np.int64)
    if off.size == 0:
        raise ValueError(f"{name}: needs at least one entry (S + 1 offsets for S segments)")
    if off[0] != 0 or off[-1] != n:
        raise ValueError(f"{name}: must start at 0 and end at {n}, got {off[0]}..{off[-1]}")
    bad = np.flatnonzero(np.diff(off) < 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}: offsets decrease at segment {i} ({off[i]} -> {off[i + 1]})")
    return off


@njit(cache=True, nogil=True)
def _first_bad_position(cum, freq):
    for i in range(cum.shape[0]):
        c = cum[i]
        f = freq[i]
        if c < 0 or f < 1 or c + f > PROB_TOTAL:
            return i
    return -1


def check_coding_inputs(data, cum, freq, seg_off, int_type) -> tuple[np.ndarray, ...]:
    """data uint8 [N], cum and freq [N] (as int_type), seg_off [S + 1]: checked once,
    with the first position whose interval is not a valid one named."""
    data = np.ascontiguousarray(data)
    if data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"data: expected a 1-D uint8 array, got {data.dtype} {data.shape}")
    n = data.shape[0]
    cum = _int_array("cum", cum, 1, int_type)
    freq = _int_array("freq", freq, 1, int_type)
    if cum.shape[0] != n or freq.shape[0] != n:
        raise ValueError(f"cum, freq and data must have one entry per byte: {cum.shape[0]}, {freq.shape[0]}, {n}")
    seg_off = check_offsets("seg_off", seg_off, n)
    bad = _first_bad_position(cum, freq)
    if bad >= 0:
        raise ValueError(
            f"position {bad}: cum={cum[bad]} freq={freq[bad]} is not a valid interval of [0, {PROB_TOTAL})"
        )
    return data, cum, freq, seg_off


def encode(data, cum, freq, seg_off, config: CoderConfig = CoderConfig(), threads: int = 1) -> Windows:
    """Code S segments into equal-information windows.

    data: uint8 [N] bytes; cum, freq: [N] cumulative frequency and frequency of each
    byte under its position's quantized distribution (see `coder.quantize`); seg_off:
    [S + 1] offsets of the segments in data, from 0 to N. `threads` > 1 splits the
    segments over threads (the result does not depend on it). Without windows
    (window_bits 0) a segment is one code: `coder.stream.encode_streams`.
    """
    if not config.windowed:
        raise ValueError("window_bits=0 codes a segment as one stream: use coder.encode_streams")
    data, cum, freq, seg_off = check_coding_inputs(data, cum, freq, seg_off, np.int32)
    limit = config.max_window_bytes or _NO_LIMIT
    groups = _split(seg_off, threads)

    def run(bounds):
        a, b = bounds
        codes, counts, win_off = kernels.encode_kernel(
            data, cum, freq, seg_off[a : b + 1], config.window_bits, limit
        )
        used = win_off[-1]
        return codes[:used].copy(), counts[:used].copy(), win_off

    if len(groups) == 1:
        parts = [run(groups[0])]
    else:
        with ThreadPoolExecutor(len(groups)) as pool:
            parts = list(pool.map(run, groups))
    return _concat(parts)


def _split(seg_off: np.ndarray, threads: int) -> list[tuple[int, int]]:
    """Contiguous segment ranges with about equal bytes each."""
    n_seg = seg_off.shape[0] - 1
    k = max(1, min(int(threads), n_seg))
    if k == 1:
        return [(0, n_seg)]
    targets = np.linspace(0, seg_off[-1], k + 1)[1:-1]
    cuts = np.unique(np.concatenate([[0], np.searchsorted(seg_off, targets), [n_seg]]))
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a] or [(0, n_seg)]


def _concat(parts) -> Windows:
    codes = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    return Windows(codes, counts, stitch_offsets(p[2] for p in parts))


def check_windows(win: Windows, n_segments: int) -> Windows:
    codes = _int_array("codes", win.codes, 1, np.uint32)
    counts = _int_array("counts", win.counts, 1, np.int32)
    if codes.shape != counts.shape:
        raise ValueError(f"codes and counts differ in length: {codes.shape[0]} vs {counts.shape[0]}")
    win_off = _int_array("win_off", win.win_off, 1, np.int64)
    if win_off.shape[0] != n_segments + 1:
        raise ValueError(f"win_off: expected {n_segments + 1} entries, got {win_off.shape[0]}")
    return Windows(codes, counts, check_offsets("win_off", win_off, codes.shape[0]))


def decode(freq, win: Windows, seg_off, config: CoderConfig = CoderConfig()) -> np.ndarray:
    """Bytes (uint8 [N]) back from windows, given every position's [N, 256] frequencies
    (from `coder.quantize.quantize`).

    Raises ValueError naming the first invalid frequency row, or the first segment
    whose windows do not decode to exactly its length.
    """
    freq = _int_array("freq", freq, 2, np.int32)
    if freq.shape[1] != ALPHABET:
        raise ValueError(f"freq: expected shape [N, {ALPHABET}], got {freq.shape}")
    seg_off = check_offsets("seg_off", seg_off, freq.shape[0])
    win = check_windows(win, seg_off.shape[0] - 1)
    out = np.zeros(freq.shape[0], np.uint8)
    status, where = kernels.decode_kernel(
        freq, win.codes, win.counts, win.win_off, seg_off, config.window_bits, out
    )
    if status == kernels.DECODE_BAD_ROW:
        raise ValueError(f"freq row {where}: frequencies must be >= 1 and sum to {PROB_TOTAL}")
    if status == kernels.DECODE_BAD_WINDOWS:
        raise ValueError(
            f"segment {where} (bytes {seg_off[where]}..{seg_off[where + 1]}): windows "
            f"{win.win_off[where]}..{win.win_off[where + 1]} do not decode to its length"
        )
    return out


def pack(win: Windows, config: CoderConfig = CoderConfig()) -> Packed:
    """Cut each segment's window bitstream into b-bit symbols (MSB first, last one
    zero-padded). With W == b this is one symbol per window."""
    win = check_windows(win, np.asarray(win.win_off).shape[0] - 1)
    symbols, sym_off = kernels.pack_kernel(win.codes, win.win_off, config.window_bits, config.symbol_bits)
    return Packed(symbols, sym_off)


def unpack(packed: Packed, windows_per_segment, config: CoderConfig = CoderConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Window codes and offsets back from symbols, given each segment's window count."""
    symbols = _int_array("symbols", packed.symbols, 1, np.uint16)
    sym_off = check_offsets("sym_off", packed.sym_off, symbols.shape[0])
    wps = _int_array("windows_per_segment", windows_per_segment, 1, np.int64)
    if wps.shape[0] != sym_off.shape[0] - 1:
        raise ValueError(f"windows_per_segment: expected {sym_off.shape[0] - 1} entries, got {wps.shape[0]}")
    codes, win_off, bad = kernels.unpack_kernel(symbols, sym_off, wps, config.window_bits, config.symbol_bits)
    if bad != kernels.OK:
        raise ValueError(f"segment {bad}: {sym_off[bad + 1] - sym_off[bad]} symbols do not hold {wps[bad]} windows")
    return codes, win_off
