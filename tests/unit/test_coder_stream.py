"""No windows (one code per segment): golden bitstreams, Numba == the big-integer
reference, round trips through decoding and packing, and codes as short as the
definition allows.

Regenerate the golden file (only with a FORMAT_VERSION bump) with
`python -m tests.unit.test_coder_stream`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coder import FORMAT_VERSION, CoderConfig, Packed, decode_streams, encode, encode_streams, pack_streams, unpack_streams
from coder.reference import stream_decode, stream_encode
from tests.coder_cases import SHAPES, case
from tests.unit.test_coder_golden import SEGMENTS, TEXT, fixed_rows

GOLDEN = Path(__file__).parents[1] / "golden" / f"stream_v{FORMAT_VERSION}.json"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def codes_of(streams) -> list[tuple[int, int]]:
    """(code, bits) per segment, the code as an integer."""
    out = []
    for s, k in enumerate(streams.bit_len.tolist()):
        raw = bytes(streams.bits[streams.byte_off[s] : streams.byte_off[s + 1]])
        out.append((int.from_bytes(raw, "big") >> (8 * len(raw) - k) if k else 0, k))
    return out


def compute() -> dict:
    data = np.frombuffer(TEXT, np.uint8)
    rows = fixed_rows(TEXT)
    f = rows[np.arange(len(data)), data]
    cum = np.cumsum(rows, 1)[np.arange(len(data)), data] - f
    st_ = encode_streams(data, cum, f, SEGMENTS)
    assert bytes(decode_streams(rows, st_, SEGMENTS)) == TEXT
    out = {"codes": [list(c) for c in codes_of(st_)]}
    for b in (8, 16):
        out[f"symbols_b{b}"] = pack_streams(st_, b).symbols.tolist()
    return out


def test_numba_and_reference_match_golden():
    golden = json.loads(GOLDEN.read_text())
    assert compute() == golden
    data = np.frombuffer(TEXT, np.uint8)
    rows = fixed_rows(TEXT)
    f = rows[np.arange(len(data)), data]
    cum = np.cumsum(rows, 1)[np.arange(len(data)), data] - f
    ref = [stream_encode(cum[a:b].tolist(), f[a:b].tolist()) for a, b in zip(SEGMENTS[:-1], SEGMENTS[1:])]
    assert [tuple(c) for c in golden["codes"]] == ref
    assert golden["codes"][2] == [0, 0]  # the empty segment has an empty code


@st.composite
def inputs(draw):
    n = draw(st.integers(0, 400))
    data, cum, freq, table = case(n, draw(st.sampled_from(SHAPES)), draw(st.integers(0, 2**31 - 1)),
                                  draw(st.sampled_from(["sample", "sample", "rarest", "any"])))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=12)))
    return data, cum, freq, table, np.array([0, *cuts, n], np.int64)


@SETTINGS
@given(inputs())
def test_numba_equals_reference_and_round_trips(x):
    data, cum, freq, table, seg_off = x
    streams = encode_streams(data, cum, freq, seg_off)
    for s, (code, k) in enumerate(codes_of(streams)):
        a, b = seg_off[s], seg_off[s + 1]
        assert (code, k) == stream_encode(cum[a:b].tolist(), freq[a:b].tolist())
        assert stream_decode(table[a:b].tolist(), code, k) == bytes(data[a:b])
        assert (k == 0) == (a == b)
    assert (decode_streams(table, streams, seg_off) == data).all()
    for b in (8, 16):
        packed = pack_streams(streams, b)
        assert (np.diff(packed.sym_off) == -(-streams.bit_len // b)).all()
        assert (decode_streams(table, unpack_streams(packed, b), seg_off) == data).all()


@SETTINGS
@given(inputs())
def test_codes_are_as_short_as_the_information_allows(x):
    """At most 2 bits over -log2 P(segment) (plus the truncation of r, a few parts in
    10**5 of a bit per byte); fewer when a coarse grid point happens to fall inside."""
    data, cum, freq, _, seg_off = x
    streams = encode_streams(data, cum, freq, seg_off)
    info = -np.log2(freq / 65536.0)
    for s, k in enumerate(streams.bit_len.tolist()):
        a, b = seg_off[s], seg_off[s + 1]
        if a == b:
            continue
        bits = float(info[a:b].sum())
        assert 1 <= k <= max(1.0, bits) + 2 + 1e-3 * (b - a), (k, bits)


def test_bad_input_is_named():
    data = np.frombuffer(b"abc", np.uint8)
    with pytest.raises(ValueError, match="position 1"):
        encode_streams(data, [0, 65536, 0], [1, 1, 1], [0, 3])
    with pytest.raises(ValueError, match="use coder.encode_streams"):
        encode(data, [0, 0, 0], [1, 1, 1], [0, 3], CoderConfig(window_bits=0))
    table = np.full((3, 256), 256, np.int32)
    streams = encode_streams(data, [97 * 256, 98 * 256, 99 * 256], [256, 256, 256], [0, 3])
    table[1, 0] = 0
    with pytest.raises(ValueError, match="freq row 1"):
        decode_streams(table, streams, [0, 3])
    with pytest.raises(ValueError, match="below 256"):
        unpack_streams(Packed(np.array([300], np.uint16), np.array([0, 1])), 8)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
