"""Masks, labels and positions from doc_ids; padding never produces NaN in attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from proxytrain import attention_mask, cu_seqlens, labels, position_ids


def test_mask_labels_positions_and_cu_seqlens():
    d = torch.tensor([0, 0, 0, 1, 1, 2, -1, -1])
    t = torch.arange(8)
    m = attention_mask(d)
    assert m[2, 0] and not m[3, 2] and m[4, 3] and not m[0, 1]
    assert m[6, 6] and not m[6, 5] and not m[7, 6]  # padding sees itself only
    assert labels(t, d).tolist() == [1, 2, -100, 4, -100, -100, -100, -100]
    assert cu_seqlens(d).tolist() == [0, 3, 5, 6, 8]
    assert position_ids(d).tolist() == [0, 1, 2, 0, 1, 0, 0, 0]
    assert position_ids(d[None].repeat(2, 1)).tolist() == [position_ids(d).tolist()] * 2


def test_sdpa_with_the_mask_has_no_nan_on_padding():
    torch.manual_seed(0)
    d = torch.tensor([[0, 0, 1, -1, -1], [0, 0, 0, 0, 0]])
    q = k = v = torch.randn(2, 1, 5, 8)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(d)[:, None])
    assert torch.isfinite(out).all()
