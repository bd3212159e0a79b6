"""Bad arguments get clear errors that name the argument and the position."""

from __future__ import annotations

import numpy as np
import pytest

from coder import CoderConfig, Packed, Windows, decode, encode, pack, unpack
from tests.coder_cases import case


@pytest.fixture(scope="module")
def good():
    data, cum, freq, table = case(200, "mixed", 5)
    return data, cum, freq, table, np.array([0, 50, 200])


def test_wrong_dtypes(good):
    data, cum, freq, _, seg = good
    with pytest.raises(TypeError, match="cum: expected an integer array"):
        encode(data, cum.astype(np.float32), freq, seg)
    with pytest.raises(TypeError, match="data: expected a 1-D uint8"):
        encode(data.astype(np.int32), cum, freq, seg)
    with pytest.raises(TypeError, match="seg_off: expected an integer array"):
        encode(data, cum, freq, np.array([0.0, 200.0]))


def test_wrong_shapes(good):
    data, cum, freq, table, seg = good
    with pytest.raises(TypeError, match="data"):
        encode(data.reshape(2, 100), cum, freq, seg)
    with pytest.raises(ValueError, match="one entry per byte"):
        encode(data, cum[:-1], freq, seg)
    with pytest.raises(ValueError, match="freq: expected 2-D"):
        decode(table[0], Windows(np.zeros(0, np.uint32), np.zeros(0, np.int32), np.zeros(2, np.int64)), [0, 0])
    with pytest.raises(ValueError, match=r"freq: expected shape \[N, 256\]"):
        decode(table[:, :255], encode(data, cum, freq, seg), seg)


def test_bad_offsets(good):
    data, cum, freq, _, _ = good
    with pytest.raises(ValueError, match="must start at 0 and end at 200"):
        encode(data, cum, freq, [-1, 200])
    with pytest.raises(ValueError, match="must start at 0 and end at 200"):
        encode(data, cum, freq, [0, 100])
    with pytest.raises(ValueError, match=r"offsets decrease at segment 1 \(120 -> 80\)"):
        encode(data, cum, freq, [0, 120, 80, 200])
    with pytest.raises(ValueError, match="at least one entry"):
        encode(data, cum, freq, [])


def test_invalid_intervals_name_the_position(good):
    data, cum, freq, _, seg = good
    f = freq.copy()
    f[37] = 0
    with pytest.raises(ValueError, match="position 37: cum=.* freq=0"):
        encode(data, cum, f, seg)
    c = cum.copy()
    c[99] = 65536 - freq[99] + 1
    with pytest.raises(ValueError, match="position 99"):
        encode(data, c, freq, seg)
    with pytest.raises(ValueError, match="cum: values outside the range of int32"):
        encode(data, cum.astype(np.int64) + 2**40, freq, seg)


def test_decode_rejects_inconsistent_windows(good):
    data, cum, freq, table, seg = good
    win = encode(data, cum, freq, seg)
    counts = win.counts.copy()
    counts[0] += 1  # first segment now claims one byte too many
    with pytest.raises(ValueError, match=r"segment 0 \(bytes 0..50\)"):
        decode(table, Windows(win.codes, counts, win.win_off), seg)
    counts = win.counts.copy()
    counts[-1] -= 1
    with pytest.raises(ValueError, match=r"segment 1 \(bytes 50..200\)"):
        decode(table, Windows(win.codes, counts, win.win_off), seg)
    with pytest.raises(ValueError, match="win_off: expected 3 entries"):
        decode(table, Windows(win.codes, win.counts, win.win_off[:2]), seg)
    with pytest.raises(ValueError, match="codes and counts differ"):
        decode(table, Windows(win.codes[:-1], win.counts, win.win_off), seg)


def test_decode_rejects_invalid_frequency_rows(good):
    data, cum, freq, table, seg = good
    win = encode(data, cum, freq, seg)
    bad = table.copy()
    bad[3, :] = 1  # sums to 256, not 65536
    with pytest.raises(ValueError, match="freq row 3"):
        decode(bad, win, seg)


def test_unpack_checks_symbol_counts(good):
    data, cum, freq, _, seg = good
    win = encode(data, cum, freq, seg)
    p = pack(win)
    wrong = win.windows_per_segment + np.array([1, 0])
    with pytest.raises(ValueError, match="segment 0: .* symbols do not hold"):
        unpack(p, wrong)
    with pytest.raises(ValueError, match="windows_per_segment: expected 2"):
        unpack(Packed(p.symbols, p.sym_off), [1])


def test_config_choices():
    with pytest.raises(ValueError, match="window_bits must be one of"):
        CoderConfig(window_bits=12)
    with pytest.raises(ValueError, match="symbol_bits must be one of"):
        CoderConfig(symbol_bits=32)
    with pytest.raises(ValueError, match="max_window_bytes"):
        CoderConfig(max_window_bytes=-1)
