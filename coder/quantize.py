"""Probabilities -> integer frequencies: the one quantization function.

It runs in torch so it can run where the model runs (CPU or GPU); only the two
integers the encoder needs per coded byte have to leave the device.

Every step is elementwise or a sum of small integers held exactly in float32 (all
values stay below 2**24), so a row's frequencies depend only on that row's float
values: not on the batch it sits in, the device's reduction order or the thread
count. That is what keeps reruns and the segment cache byte-identical.
"""

from __future__ import annotations

import torch

from .constants import ALPHABET, PROB_TOTAL

_SPREAD = PROB_TOTAL - ALPHABET  # mass shared out in proportion to the probabilities


def _frequencies(probs: torch.Tensor) -> torch.Tensor:
    """[..., 256] float32 tensor of exact integer frequencies (the definition).

    f = 1 + floor(p * (PROB_TOTAL - 256)); the remainder (0..256 for a normalised row)
    goes to the byte with the largest f, lowest byte value on ties. NaN counts as 0
    and p is clipped to [0, 1]; a row whose frequencies would exceed PROB_TOTAL (it
    was not normalised) becomes uniform, so every f >= 1 whatever comes in.
    """
    if probs.shape[-1] != ALPHABET:
        raise ValueError(f"quantize: last axis must be {ALPHABET}, got shape {tuple(probs.shape)}")
    x = probs.float() * _SPREAD
    x.clamp_(0.0, float(_SPREAD)).nan_to_num_(0.0).floor_().add_(1.0)
    remainder = PROB_TOTAL - x.sum(dim=-1, keepdim=True)
    # f * 256 + (255 - index) < 2**24 is exact in float32: its max picks the top byte.
    ramp = torch.arange(ALPHABET - 1, -1, -1, dtype=torch.float32, device=x.device)
    key = x * float(ALPHABET) + ramp  # no tensor from a Python number: nothing to copy inside a CUDA graph
    top = (ALPHABET - 1) - key.amax(dim=-1, keepdim=True).remainder_(ALPHABET).long()
    # Rare (only rows that were not normalised), and branch-free: no host sync, so the
    # whole function can run inside a CUDA graph.
    broken = x.gather(-1, top) + remainder < 1
    x = torch.where(broken, float(PROB_TOTAL // ALPHABET), x)
    remainder = torch.where(broken, 0.0, remainder)
    return x.scatter_add_(-1, top, remainder)


def quantize(probs: torch.Tensor) -> torch.Tensor:
    """Integer frequencies (int32, same shape as probs) summing to PROB_TOTAL per row."""
    return _frequencies(probs).to(torch.int32)


def quantize_logits(logits: torch.Tensor) -> torch.Tensor:
    """Softmax in float32, then `quantize`."""
    return quantize(torch.softmax(logits.float(), dim=-1))


def coding_ints(probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cumulative frequency, frequency) of each target byte under `quantize(probs)`:
    the only numbers the encoder needs, so the only ones that leave the device.

    probs: [..., 256]; targets: [...] byte values. Returns two int32 tensors shaped
    like targets, on the same device. Equal to gathering from `quantize(probs)`.
    """
    x = _frequencies(probs)
    idx = targets.long().unsqueeze(-1)
    f = x.gather(-1, idx)
    cum = x.cumsum(dim=-1).gather(-1, idx) - f  # exact: partial sums < 2**24
    return cum.squeeze(-1).to(torch.int32), f.squeeze(-1).to(torch.int32)
