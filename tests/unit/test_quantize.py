"""The quantization function: valid, exact, batch-invariant, and the encoder's view of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from coder.constants import PROB_TOTAL
from coder.quantize import coding_ints, quantize, quantize_logits

SPREAD = PROB_TOTAL - 256


def oracle(p32: np.ndarray) -> np.ndarray:
    """The definition in numpy float32, row by row: an independent implementation."""
    out = []
    for row in p32:
        x = np.clip(np.nan_to_num(row.astype(np.float32) * np.float32(SPREAD), nan=0.0), 0, SPREAD)
        f = np.floor(x).astype(np.int64) + 1
        rem = PROB_TOTAL - f.sum()
        top = int(np.flatnonzero(f == f.max())[0])
        if f[top] + rem < 1:
            f[:] = PROB_TOTAL // 256
        else:
            f[top] += rem
        out.append(f)
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 30.0), st.integers(1, 64))
def test_matches_oracle_and_is_valid(seed, temperature, n):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(n, 256, generator=g) * temperature, -1)
    q = quantize(p)
    assert q.dtype == torch.int32
    assert (q.sum(-1) == PROB_TOTAL).all() and (q >= 1).all()
    assert np.array_equal(q.numpy(), oracle(p.numpy()))


def test_exact_binary_fractions():
    p = torch.zeros(3, 256)
    p[0, 10], p[0, 20], p[0, 30] = 0.5, 0.25, 0.25  # tie between 20 and 30 below the top
    p[1, :] = 1 / 256  # flat: every f = 256, remainder 0
    # Tie at the top (511/1024 each) with fractional parts lost to floor: the lowest
    # byte value takes the remainder of 2.
    p[2, 7], p[2, 9], p[2, 20], p[2, 21] = 511 / 1024, 511 / 1024, 1 / 1024, 1 / 1024
    q = quantize(p).numpy()
    assert q[0, 10] == 1 + SPREAD // 2 + (PROB_TOTAL - (256 + SPREAD)) and q[0, 20] == q[0, 30] == 1 + SPREAD // 4
    assert (q[1] == 256).all()
    assert (q[2, 7], q[2, 9], q[2, 20], q[2, 0]) == (32579, 32577, 64, 1)


def test_broken_rows_still_give_valid_frequencies():
    p = torch.softmax(torch.randn(5, 256), -1)
    p[0] = float("nan")
    p[1] = -1.0
    p[2] = float("inf")
    p[3] = 0.0
    p[4] = 2.0  # not normalised
    q = quantize(p)
    assert (q.sum(-1) == PROB_TOTAL).all() and (q >= 1).all()


def test_batch_invariant():
    p = torch.softmax(torch.randn(300, 256) * 5, -1)
    whole = quantize(p)
    parts = torch.cat([quantize(p[i : i + 7]) for i in range(0, 300, 7)])
    assert torch.equal(whole, parts)
    assert torch.equal(quantize(p[None])[0], whole)


def test_coding_ints_equal_gathering_from_the_table():
    p = torch.softmax(torch.randn(4, 50, 256) * 4, -1)
    t = torch.randint(0, 256, (4, 50))
    table = quantize(p)
    cum, f = coding_ints(p, t)
    assert cum.dtype == f.dtype == torch.int32 and cum.shape == t.shape
    assert torch.equal(f, table.gather(-1, t[..., None].long())[..., 0])
    assert torch.equal(cum, table.cumsum(-1).gather(-1, t[..., None].long())[..., 0] - f)


def test_logits_and_shape_errors():
    logits = torch.randn(3, 256) * 3
    assert torch.equal(quantize_logits(logits), quantize(torch.softmax(logits, -1)))
    with pytest.raises(ValueError, match="last axis must be 256"):
        quantize(torch.rand(3, 255))
