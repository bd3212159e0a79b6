"""Golden bitstreams: a silent change of the coding format fails here.

Two files: `coder_v<N>.json` pins the coder on given probabilities (`coder.encode`, the
library API), `lanes_v<N>.json` pins the lane encoder that writes every output (the
context reset at every window, the window-start distribution constant), each checked
against the pure-Python oracle too. Regenerate (only with a FORMAT_VERSION bump) with
`python -m tests.unit.test_coder_golden`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coder import FORMAT_VERSION, CoderConfig, decode, encode, pack
from coder.constants import PROB_TOTAL
from coder.lanes import LaneDecoder, LaneEncoder
from coder.reference import ReferenceCoder, window_loop

GOLDEN = Path(__file__).parents[1] / "golden" / f"coder_v{FORMAT_VERSION}.json"
LANES_GOLDEN = Path(__file__).parents[1] / "golden" / f"lanes_v{FORMAT_VERSION}.json"
TEXT = "def greet(name):\n    return f'héllo, {name}!'  # ünïcode\x00\x00\x00 tabs\t\tend\n".encode()
SEGMENTS = [0, 20, 21, 21, len(TEXT)]


def fixed_rows(data: bytes) -> np.ndarray:
    """Integer frequency rows from a formula: peaked on the right byte 4 times in 5,
    on a wrong one otherwise. No RNG or floats, so identical everywhere."""
    rows = np.zeros((len(data), 256), np.int64)
    for i, byte in enumerate(data):
        row = 1 + (np.arange(256) * 131 + i * 71) % 61
        guess = byte if i % 5 else (byte + 1) % 256
        row[guess] += PROB_TOTAL - row.sum() - (i % 3) * 9000
        row[(guess + 7) % 256] += (i % 3) * 9000
        rows[i] = row
    assert (rows.sum(1) == PROB_TOTAL).all() and rows.min() >= 1
    return rows.astype(np.int32)


def compute(use_reference: bool) -> dict:
    data = np.frombuffer(TEXT, np.uint8)
    rows = fixed_rows(TEXT)
    f = rows[np.arange(len(data)), data]
    cum = np.cumsum(rows, 1)[np.arange(len(data)), data] - f
    out = {}
    for w in (8, 16, 32):
        for mw in (0, 4):
            cfg = CoderConfig(window_bits=w, max_window_bytes=mw)
            if use_reference:
                ref = ReferenceCoder(w, mw)
                codes, counts = [], []
                for a, b in zip(SEGMENTS[:-1], SEGMENTS[1:]):
                    c, n = ref.encode_segment(TEXT[a:b], cum[a:b].tolist(), f[a:b].tolist())
                    codes += c
                    counts += n
            else:
                win = encode(data, cum, f, SEGMENTS, cfg)
                codes, counts = win.codes.tolist(), win.counts.tolist()
                assert bytes(decode(rows, win, SEGMENTS, cfg)) == TEXT
            key = f"W{w}_max{mw}"
            out[key] = {"codes": codes, "counts": counts}
            if not use_reference:
                for b in (8, 16):
                    p = pack(win, CoderConfig(window_bits=w, symbol_bits=b, max_window_bytes=mw))
                    out[key][f"symbols_b{b}"] = p.symbols.tolist()
    return out


def window_model(prev: int | None, n: int) -> np.ndarray:
    """A frequency row for the n-th byte of a window after byte prev (None: BOS), from a
    formula: peaked on (prev + n) % 256 and on a runner-up, no RNG or floats."""
    p = 256 if prev is None else prev
    row = 1 + (np.arange(256) * 37 + p * 11 + n * 5) % 29
    row[(p + n) % 256] += (PROB_TOTAL - row.sum()) * 3 // 4
    row[(p * 3 + 1) % 256] += PROB_TOTAL - row.sum()
    assert row.sum() == PROB_TOTAL and row.min() >= 1
    return row.astype(np.int32)


MODEL = np.stack([np.stack([window_model(None if p == 256 else p, n) for n in range(64)]) for p in range(257)])


def compute_lanes(use_reference: bool) -> dict:
    data = np.frombuffer(TEXT, np.uint8)
    out = {}
    for w in (8, 16, 32):
        for mw in (4, 63):
            cfg = CoderConfig(window_bits=w, max_window_bytes=mw)
            if use_reference:
                codes, counts = [], []
                for a, b in zip(SEGMENTS[:-1], SEGMENTS[1:]):
                    c, n = window_loop(TEXT[a:b], lambda prev, j: MODEL[256 if prev is None else prev, j].tolist(), w, mw)
                    codes += c
                    counts += n
                out[f"W{w}_max{mw}"] = {"codes": codes, "counts": counts}
                continue
            lanes = 3
            enc = LaneEncoder(data, SEGMENTS, lanes, MODEL[256, 0], cfg)
            while enc.waiting_count:
                rows = MODEL[enc.tok, enc.slot]
                cum = np.take_along_axis(np.cumsum(rows, 1) - rows, enc.target[:, None], 1)[:, 0]
                enc.advance(cum, rows[np.arange(lanes), enc.target])
            win = enc.windows()
            dec = LaneDecoder(win, SEGMENTS, lanes, MODEL[256, 0], cfg)
            while dec.waiting_count:
                dec.advance(MODEL[dec.tok, dec.slot])
            assert dec.out.tobytes() == TEXT and not dec.bad_seg.any()
            out[f"W{w}_max{mw}"] = {"codes": win.codes.tolist(), "counts": win.counts.tolist(),
                                    "symbols_b16": pack(win, CoderConfig(window_bits=w, symbol_bits=16,
                                                                          max_window_bytes=mw)).symbols.tolist()}
    return out


def test_lane_encoder_matches_golden():
    golden = json.loads(LANES_GOLDEN.read_text())
    got = compute_lanes(use_reference=False)
    assert got.keys() == golden.keys()
    for key in golden:
        assert got[key] == golden[key], key


def test_window_oracle_matches_the_lane_golden():
    golden = json.loads(LANES_GOLDEN.read_text())
    got = compute_lanes(use_reference=True)
    for key in golden:
        assert got[key]["codes"] == golden[key]["codes"] and got[key]["counts"] == golden[key]["counts"], key
    assert 0 in golden["W8_max63"]["counts"] and max(golden["W32_max4"]["counts"]) == 4  # escapes, limits


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_numba_matches_golden(golden):
    got = compute(use_reference=False)
    assert got.keys() == golden.keys()
    for key in golden:
        assert got[key] == golden[key], key


def test_reference_matches_golden(golden):
    got = compute(use_reference=True)
    for key in golden:
        assert got[key]["codes"] == golden[key]["codes"], key
        assert got[key]["counts"] == golden[key]["counts"], key


def test_golden_exercises_escapes_and_limits(golden):
    assert 0 in golden["W8_max0"]["counts"]  # escapes at W = 8
    assert max(golden["W32_max4"]["counts"]) == 4
    assert max(golden["W32_max0"]["counts"]) > 4


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(compute(use_reference=False), indent=1) + "\n")
    LANES_GOLDEN.write_text(json.dumps(compute_lanes(use_reference=False), indent=1) + "\n")
    print(f"wrote {GOLDEN} and {LANES_GOLDEN}")
