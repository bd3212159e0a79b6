"""Golden bitstreams: a silent change of the coding format fails here.

Regenerate (only with a FORMAT_VERSION bump) with `python -m tests.test_coder_golden`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coder import FORMAT_VERSION, CoderConfig, decode, encode, pack
from coder.constants import PROB_TOTAL
from coder.reference import ReferenceCoder

GOLDEN = Path(__file__).parent / "golden" / f"coder_v{FORMAT_VERSION}.json"
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
    print(f"wrote {GOLDEN}")
