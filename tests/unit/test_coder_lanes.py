"""Lane-driven coding (context reset at every window) against a pure-Python oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coder import CoderConfig
from coder.constants import PROB_TOTAL
from coder.lanes import LaneDecoder, LaneEncoder
from coder.reference import window_loop

MAX_SLOT = 40


def toy_table(seed: int) -> np.ndarray:
    """rows[prev_byte, slot] -> a frequency row: a context-dependent toy 'model'."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, 40, size=(257, MAX_SLOT, 256))
    favourite = (np.arange(257)[:, None] * 7 + np.arange(MAX_SLOT)[None, :] * 3) % 256
    np.put_along_axis(rows, favourite[..., None], 0, axis=2)
    np.put_along_axis(rows, favourite[..., None], PROB_TOTAL - rows.sum(-1, keepdims=True), axis=2)
    assert (rows.sum(-1) == PROB_TOTAL).all()
    return rows.astype(np.int32)


def oracle(data: bytes, seg_off, table, window_bits, max_window):
    """Windows of each segment, coding byte j of a window with table[prev, j] (prev =
    BOS for the first byte), straight from the definition."""
    codes, counts = [], []
    for a, b in zip(seg_off[:-1], seg_off[1:]):
        c, n = window_loop(data[a:b], lambda prev, j: table[256, 0] if prev is None else table[prev, j], window_bits,
                           max_window or 0)
        codes += c
        counts += n
    return codes, counts


def run_lanes(data, seg_off, table, lanes, cfg):
    enc = LaneEncoder(np.frombuffer(data, np.uint8), seg_off, lanes, table[256, 0], cfg)
    while enc.waiting_count:
        rows = table[enc.tok, enc.slot]
        cum = np.take_along_axis(np.cumsum(rows, 1) - rows, enc.target[:, None], 1)[:, 0]
        enc.advance(cum, rows[np.arange(lanes), enc.target])
    return enc


def decode_lanes(win, seg_off, table, lanes, cfg):
    dec = LaneDecoder(win, seg_off, lanes, table[256, 0], cfg)
    while dec.waiting_count:
        dec.advance(table[dec.tok, dec.slot])
    return dec


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=300),
    st.lists(st.integers(0, 300), max_size=8),
    st.sampled_from([8, 16, 32]),
    st.sampled_from([1, 2, 5, 16]),
    st.sampled_from([0, 1, 3, 39]),
    st.integers(0, 3),
)
def test_lanes_match_oracle_and_round_trip(data, cuts, window_bits, lanes, max_window, seed):
    if max_window == 0:
        max_window = MAX_SLOT - 1  # the toy table has MAX_SLOT slots
    table = toy_table(seed)
    seg_off = np.array([0, *sorted(min(c, len(data)) for c in cuts), len(data)])
    cfg = CoderConfig(window_bits=window_bits, max_window_bytes=max_window)
    enc = run_lanes(data, seg_off, table, lanes, cfg)
    win = enc.windows()
    codes, counts = oracle(data, seg_off, table, window_bits, max_window)
    assert win.codes.tolist() == codes and win.counts.tolist() == counts
    assert enc.positions == expected_positions(win, max_window)
    dec = decode_lanes(win, seg_off, table, lanes, cfg)
    assert not dec.bad_seg.any()
    assert dec.out.tobytes() == data


def expected_positions(win, max_window):
    """Model positions the lanes should need: one per byte after a window's first (whose
    distribution is the constant window-start one), plus one for the byte that did not
    fit, for windows that closed by overflowing (not at a segment end or the limit)."""
    total = 0
    for s in range(len(win.win_off) - 1):
        counts = win.counts[win.win_off[s] : win.win_off[s + 1]].tolist()
        for k, n in enumerate(counts):
            if n > 0:
                total += n - 1 + (k < len(counts) - 1 and n < max_window)
    return total


def test_lane_count_does_not_change_output():
    data = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    seg_off = np.arange(0, 5001, 37).tolist() + [5000]
    table = toy_table(1)
    cfg = CoderConfig(max_window_bytes=MAX_SLOT - 1)
    ref = run_lanes(data, seg_off, table, 1, cfg).windows()
    for lanes in (3, 64, 500):
        w = run_lanes(data, seg_off, table, lanes, cfg).windows()
        assert np.array_equal(w.codes, ref.codes) and np.array_equal(w.counts, ref.counts)
        assert np.array_equal(w.win_off, ref.win_off)


def test_decoder_flags_inconsistent_segments():
    data = bytes(range(200))
    seg_off = [0, 100, 200]
    table = toy_table(2)
    cfg = CoderConfig(max_window_bytes=MAX_SLOT - 1)
    win = run_lanes(data, seg_off, table, 4, cfg).windows()
    win.counts[win.win_off[1]] += 200  # second segment's first window claims too much
    dec = decode_lanes(win, seg_off, table, 4, cfg)
    assert dec.bad_seg.tolist() == [0, 2]
    assert dec.out[:100].tobytes() == data[:100]


def test_windows_before_done_is_an_error():
    table = toy_table(0)
    enc = LaneEncoder(np.zeros(50, np.uint8), [0, 50], 2, table[256, 0], CoderConfig(max_window_bytes=8))
    with pytest.raises(RuntimeError, match="before every segment"):
        enc.windows()
