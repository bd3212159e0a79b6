"""What an attention kernel and a loss need, from a batch's `doc_ids` ([..., T], -1 = padding)."""

from __future__ import annotations

import torch


def attention_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """[..., T] -> [..., T, T] bool, True where a query may attend: causally within its
    segment. A padding position attends to itself only, so no row is all False (an
    all-masked row makes softmax, and SDPA, return NaN)."""
    T = doc_ids.shape[-1]
    same = doc_ids[..., :, None] == doc_ids[..., None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    real = (doc_ids[..., :, None] >= 0) & same & causal
    eye = torch.eye(T, dtype=torch.bool, device=doc_ids.device)
    return real | (eye & (doc_ids[..., :, None] < 0))


def position_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token within its segment (0 at every segment start and on padding)."""
    T = doc_ids.shape[-1]
    idx = torch.arange(T, device=doc_ids.device).expand(doc_ids.shape)
    start = torch.ones_like(doc_ids, dtype=torch.bool)
    start[..., 1:] = doc_ids[..., 1:] != doc_ids[..., :-1]
    first = torch.where(start, idx, torch.zeros_like(idx)).cummax(-1).values
    return torch.where(doc_ids >= 0, idx - first, torch.zeros_like(idx))


def cu_seqlens(doc_ids: torch.Tensor) -> torch.Tensor:
    """[T] segment ids of one sequence -> int32 cumulative segment lengths (flash-attn
    varlen style), padding counted as its own trailing segment."""
    change = torch.ones(doc_ids.shape[0] + 1, dtype=torch.bool, device=doc_ids.device)
    change[1:-1] = doc_ids[1:] != doc_ids[:-1]
    return torch.nonzero(change).flatten().to(torch.int32)


def labels(tokens: torch.Tensor, doc_ids: torch.Tensor, ignore: int = -100) -> torch.Tensor:
    """Next-token targets that never cross a segment boundary (ignore elsewhere)."""
    out = torch.full_like(tokens, ignore)
    same = (doc_ids[..., 1:] == doc_ids[..., :-1]) & (doc_ids[..., 1:] >= 0)
    out[..., :-1] = torch.where(same, tokens[..., 1:], torch.full_like(tokens[..., 1:], ignore))
    return out
