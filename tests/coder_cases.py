"""Inputs for coder tests: distributions of several shapes, quantized, plus bytes."""

from __future__ import annotations

import numpy as np
import torch

from coder.constants import PROB_TOTAL
from coder.quantize import quantize

SHAPES = ("peaked", "flat", "mixed", "onehot")


def make_probs(n: int, shape: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 256, generator=g)
    if shape == "flat":
        return torch.full((n, 256), 1 / 256)
    if shape == "peaked":
        return torch.softmax(z * 12, -1)
    if shape == "onehot":  # as peaked as quantization allows: one byte takes the rest
        p = torch.zeros(n, 256)
        p[torch.arange(n), torch.randint(0, 256, (n,), generator=g)] = 1.0
        return p
    scale = torch.exp(1.5 * torch.randn(n, 1, generator=g))
    return torch.softmax(z * scale, -1)


def case(n: int, shape: str, seed: int, byte_mode: str = "sample"):
    """(data uint8, cum int32, freq int32, freq_table int32 [n, 256])."""
    freq_table = quantize(make_probs(n, shape, seed)).numpy()
    rng = np.random.default_rng(seed)
    if byte_mode == "sample":  # bytes the distribution expects
        u = rng.integers(0, PROB_TOTAL, n)
        data = (np.cumsum(freq_table, 1) <= u[:, None]).sum(1).astype(np.uint8)
    elif byte_mode == "rarest":  # the least likely byte at every position
        data = freq_table.argmin(1).astype(np.uint8)
    else:  # arbitrary bytes
        data = rng.integers(0, 256, n).astype(np.uint8)
    return (data,) + ints_for(freq_table, data) + (freq_table,)


def ints_for(freq_table: np.ndarray, data: np.ndarray):
    rows = np.arange(len(data))
    f = freq_table[rows, data].astype(np.int32)
    cum = (np.cumsum(freq_table, 1)[rows, data] - f).astype(np.int32)
    return cum, f
