"""Pure-Python reference coder: the oracle the Numba kernels are tested against.

It is written from the definition rather than from the kernels: the interval is kept
exactly as big integers [low, low + rng) in units of 2**-scale, and after every byte it
asks directly whether some W-bit code point v * 2**(scale - W) lies inside. Only the
range arithmetic (r = rng >> PROB_BITS, shift by RENORM_SHIFT once the interval is
narrower than one code step) is shared with the kernels, because it defines the format.
Slow and simple, with its invariants asserted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import ESCAPE_COUNT, PROB_BITS, PROB_TOTAL, RENORM_FLOOR_BITS, RENORM_SHIFT, STATE_BITS


@dataclass
class Interval:
    window_bits: int
    low: int = 0
    rng: int = 1 << STATE_BITS
    scale: int = STATE_BITS

    @property
    def step(self) -> int:
        """Distance between neighbouring W-bit code points, in current units."""
        return 1 << (self.scale - self.window_bits)

    def narrowed(self, cum: int, freq: int) -> "Interval":
        cum, freq = int(cum), int(freq)  # exact Python integers, never numpy scalars
        assert 0 <= cum and 1 <= freq and cum + freq <= PROB_TOTAL
        r = self.rng >> PROB_BITS
        assert r >= 1
        new = Interval(self.window_bits, self.low + r * cum, r * freq, self.scale)
        assert self.low <= new.low and new.low + new.rng <= self.low + self.rng  # nested
        if new.rng < new.step:  # narrower than one code step: keep precision
            while new.rng < (1 << RENORM_FLOOR_BITS):
                new.low <<= RENORM_SHIFT
                new.rng <<= RENORM_SHIFT
                new.scale += RENORM_SHIFT
        return new

    def code(self) -> int | None:
        """Smallest code point inside the interval, or None."""
        v = -(-self.low // self.step)
        if v * self.step < self.low + self.rng:
            assert 0 <= v < (1 << self.window_bits)
            return v
        return None


def _symbol_at(cur: Interval, row: list[int], value: int) -> tuple[int, int, int]:
    """The byte whose sub-interval of cur holds value: (byte, cum, freq)."""
    assert len(row) == 256 and sum(row) == PROB_TOTAL and min(row) >= 1
    q = (value - cur.low) // (cur.rng >> PROB_BITS)
    assert 0 <= q < PROB_TOTAL, "code outside the distribution"
    c = 0
    for sym, f in enumerate(row):
        if c + f > q:
            return sym, c, f
        c += f
    raise AssertionError("unreachable: the row sums to PROB_TOTAL")


def windows(segment: bytes, interval, window_bits: int, max_window_bytes: int = 0) -> tuple[list[int], list[int]]:
    """Equal-information windows of one segment, from the definition: the one window
    loop (the model-driven and the fixed-probability oracles below both use it).
    interval(pos, n) is (cum, freq) of segment[pos] coded as the n-th byte of its window.
    A window closes before the byte that would leave no W-bit code point inside the
    interval; a byte that fits no window at all is escaped (code: the raw byte, count
    ESCAPE_COUNT)."""
    codes: list[int] = []
    counts: list[int] = []
    limit = max_window_bytes or len(segment) + 1
    i = 0
    while i < len(segment):
        cur, n = Interval(window_bits), 0
        while i + n < len(segment) and n < limit:
            nxt = cur.narrowed(*interval(i + n, n))
            if nxt.code() is None:
                break
            cur, n = nxt, n + 1
        if n == 0:
            codes.append(segment[i])
            counts.append(ESCAPE_COUNT)
            i += 1
        else:
            codes.append(cur.code())
            counts.append(n)
            i += n
    return codes, counts


def window_loop(segment: bytes, next_freq, window_bits: int, max_window_bytes: int = 0) -> tuple[list[int], list[int]]:
    """Windows of one segment under a model that resets at every window: next_freq(prev, n)
    is the frequency row (256 ints) for the n-th byte of a window, prev the byte before
    it (None for the first: the model sees BOS alone)."""
    def interval(pos: int, n: int) -> tuple[int, int]:
        row = next_freq(segment[pos - 1] if n else None, n)
        byte = segment[pos]
        return sum(row[:byte]), row[byte]

    return windows(segment, interval, window_bits, max_window_bytes)


@dataclass
class ReferenceCoder:
    window_bits: int = 16
    max_window_bytes: int = 0  # 0: no limit

    def encode_segment(self, data: bytes, cum: list[int], freq: list[int]) -> tuple[list[int], list[int]]:
        """Codes and byte counts of the windows of one segment, each byte's interval given."""
        assert len(data) == len(cum) == len(freq)
        return windows(data, lambda pos, n: (cum[pos], freq[pos]), self.window_bits, self.max_window_bytes)

    def decode_segment(self, freq_rows: list[list[int]], codes: list[int], counts: list[int]) -> bytes:
        """Bytes of one segment from its windows and each position's frequencies."""
        out = bytearray()
        for code, n in zip(codes, counts, strict=True):
            if n == ESCAPE_COUNT:
                assert 0 <= code < 256
                out.append(code)
                continue
            cur = Interval(self.window_bits)
            value = code * cur.step
            for _ in range(n):
                sym, c, f = _symbol_at(cur, freq_rows[len(out)], value)
                nxt = cur.narrowed(c, f)
                value <<= nxt.scale - cur.scale
                assert nxt.low <= value < nxt.low + nxt.rng
                cur = nxt
                out.append(sym)
        assert len(out) == len(freq_rows)
        return bytes(out)


def stream_encode(cum: list[int], freq: list[int]) -> tuple[int, int]:
    """(code, bits) of one segment without windows, from the definition: one interval
    over the whole segment, and the fewest bits k >= 1 whose zero-padded point
    v * 2**(scale - k) lies in it. An empty segment has an empty code."""
    if not len(cum):
        return 0, 0
    cur = Interval(window_bits=0)  # no code step: renormalise whenever narrower than 2**54
    for c, f in zip(cum, freq, strict=True):
        cur = cur.narrowed(c, f)
    k = 1
    while True:
        step = 1 << max(0, cur.scale - k)
        v = -(-(cur.low << max(0, k - cur.scale)) // step)
        if v * step < (cur.low + cur.rng) << max(0, k - cur.scale):
            return v, k
        k += 1


def stream_decode(freq_rows: list[list[int]], code: int, bits: int) -> bytes:
    """Bytes of one segment from its code, each position's frequencies giving the length."""
    out = bytearray()
    cur = Interval(window_bits=0)
    for row in freq_rows:
        value = (code << cur.scale) >> bits  # the code point, zero-padded, in current units (floor)
        sym, c, f = _symbol_at(cur, row, value)
        cur = cur.narrowed(c, f)
        out.append(sym)
    return bytes(out)
