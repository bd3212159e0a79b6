"""Round trip, window invariants and Numba == reference, over random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coder import CoderConfig, Windows, decode, encode, pack, stitch_offsets, unpack
from coder.constants import ESCAPE_COUNT, PROB_BITS
from coder.reference import ReferenceCoder, Interval
from tests.coder_cases import SHAPES, case, ints_for

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def inputs(draw):
    n = draw(st.integers(0, 400))
    shape = draw(st.sampled_from(SHAPES))
    byte_mode = draw(st.sampled_from(["sample", "sample", "rarest", "any"]))
    seed = draw(st.integers(0, 2**31 - 1))
    # Segment cuts may repeat (empty segments) and include 1-byte segments.
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=12)))
    seg_off = np.array([0, *cuts, n], dtype=np.int64)
    window_bits = draw(st.sampled_from([8, 16, 32]))
    symbol_bits = draw(st.sampled_from([8, 16]))
    max_window_bytes = draw(st.sampled_from([0, 0, 1, 3, 64]))
    data, cum, freq, table = case(n, shape, seed, byte_mode)
    cfg = CoderConfig(window_bits, symbol_bits, max_window_bytes)
    return data, cum, freq, table, seg_off, cfg


def segments(win: Windows, seg_off):
    for s in range(len(seg_off) - 1):
        a, b = win.win_off[s], win.win_off[s + 1]
        yield s, seg_off[s], seg_off[s + 1], win.codes[a:b], win.counts[a:b]


@SETTINGS
@given(inputs())
def test_round_trip_and_window_invariants(args):
    data, cum, freq, table, seg_off, cfg = args
    win = encode(data, cum, freq, seg_off, cfg)
    assert np.array_equal(decode(table, win, seg_off, cfg), data)

    assert win.codes.dtype == np.uint32 and np.all(win.codes < (1 << cfg.window_bits))
    for s, a, b, codes, counts in segments(win, seg_off):
        covered = np.maximum(counts, 1).sum() if len(counts) else 0
        assert covered == b - a, f"segment {s}: windows cover {covered} of {b - a} bytes"
        if cfg.max_window_bytes:
            assert np.all(counts <= cfg.max_window_bytes)
        pos = a
        for k, n in enumerate(counts):
            if n == ESCAPE_COUNT:
                # Only a byte that does not fit an empty window may be escaped.
                assert cfg.window_bits < PROB_BITS
                assert Interval(cfg.window_bits).narrowed(cum[pos], freq[pos]).code() is None
                pos += 1
                continue
            iv = Interval(cfg.window_bits)
            for j in range(pos, pos + n):
                iv = iv.narrowed(cum[j], freq[j])
            assert iv.code() == codes[k]
            pos += n
            last = k == len(counts) - 1
            if not last and n != cfg.max_window_bytes:
                # Maximal: the next byte would not have fitted this window.
                assert iv.narrowed(cum[pos], freq[pos]).code() is None


@SETTINGS
@given(inputs())
def test_numba_matches_reference_bit_for_bit(args):
    data, cum, freq, table, seg_off, cfg = args
    win = encode(data, cum, freq, seg_off, cfg)
    ref = ReferenceCoder(cfg.window_bits, cfg.max_window_bytes)
    for s, a, b, codes, counts in segments(win, seg_off):
        rc, rn = ref.encode_segment(bytes(data[a:b]), cum[a:b].tolist(), freq[a:b].tolist())
        assert rc == codes.tolist() and rn == counts.tolist(), f"segment {s} differs"
        assert ref.decode_segment(table[a:b].tolist(), rc, rn) == bytes(data[a:b])


@SETTINGS
@given(inputs())
def test_pack_is_exactly_w_bits_per_window_and_inverts(args):
    data, cum, freq, table, seg_off, cfg = args
    win = encode(data, cum, freq, seg_off, cfg)
    packed = pack(win, cfg)
    nw = win.windows_per_segment
    expected = (nw * cfg.window_bits + cfg.symbol_bits - 1) // cfg.symbol_bits
    assert np.array_equal(np.diff(packed.sym_off), expected)
    assert np.all(packed.symbols < (1 << cfg.symbol_bits))
    # The concatenated symbol bits are the window bits followed by < b zero bits.
    for s in range(len(nw)):
        sym = packed.symbols[packed.sym_off[s] : packed.sym_off[s + 1]]
        bits = "".join(format(int(x), f"0{cfg.symbol_bits}b") for x in sym)
        wins = win.codes[win.win_off[s] : win.win_off[s + 1]]
        wbits = "".join(format(int(x), f"0{cfg.window_bits}b") for x in wins)
        assert bits.startswith(wbits) and set(bits[len(wbits) :]) <= {"0"}
        assert len(bits) - len(wbits) < cfg.symbol_bits
    codes, win_off = unpack(packed, nw, cfg)
    assert np.array_equal(codes, win.codes) and np.array_equal(win_off, win.win_off)


@pytest.mark.parametrize("window_bits", [8, 16, 32])
def test_smallest_frequency_bytes_round_trip(window_bits):
    """Every position codes its least likely byte (frequency 1 where peaked)."""
    cfg = CoderConfig(window_bits)
    data, cum, freq, table, = case(3000, "peaked", 7, "rarest")[:4]
    assert freq.min() == 1
    seg_off = np.array([0, 1, 1, 1000, 3000])
    win = encode(data, cum, freq, seg_off, cfg)
    assert np.array_equal(decode(table, win, seg_off, cfg), data)
    escapes = int((win.counts == ESCAPE_COUNT).sum())
    assert (escapes > 0) == (window_bits < PROB_BITS)


def test_threads_do_not_change_the_output():
    data, cum, freq, _ = case(50_000, "mixed", 3)
    seg_off = np.arange(0, 50_001, 97).tolist() + [50_000]
    one = encode(data, cum, freq, seg_off)
    for threads in (2, 3, 8):
        many = encode(data, cum, freq, seg_off, threads=threads)
        assert np.array_equal(one.codes, many.codes)
        assert np.array_equal(one.counts, many.counts)
        assert np.array_equal(one.win_off, many.win_off)


def test_flat_distribution_fills_windows_exactly():
    """Uniform bytes carry exactly 8 bits: W bits hold W/8 bytes and no more, unless
    the extra byte's interval starts exactly on a code point (byte 0), so avoid it."""
    table = case(1024, "flat", 0)[3]
    data = np.random.default_rng(1).integers(1, 256, 1024).astype(np.uint8)
    cum, freq = ints_for(table, data)
    for w in (8, 16, 32):
        win = encode(data, cum, freq, [0, 1024], CoderConfig(w))
        assert set(win.counts.tolist()) == {w // 8}


def test_kernels_release_the_gil_and_are_cached():
    from coder import kernels

    for k in (kernels.encode_kernel, kernels.decode_kernel, kernels.pack_kernel, kernels.unpack_kernel):
        assert k.targetoptions.get("nogil") is True
        assert k._cache is not None and type(k._cache).__name__ == "FunctionCache"


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 50), max_size=6), max_size=6))
def test_stitched_offsets_index_the_concatenation(part_lengths):
    """stitch_offsets (every place that joins records, windows or documents uses it):
    segment k of part p is element p_start + k of the concatenation."""
    parts = [np.concatenate([[0], np.cumsum(lens)]).astype(np.int64) for lens in part_lengths]
    got = stitch_offsets(parts)
    flat = [n for lens in part_lengths for n in lens]
    assert got.dtype == np.int64 and got.tolist() == [0, *np.cumsum(flat).tolist()]
