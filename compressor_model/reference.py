"""The coding algorithm in one screen, one lane, nothing batched: the lane engine's
test oracle and the place to read what it does (the window loop itself is
`coder.reference.window_loop`, the coder's definition, about twenty lines).

Every segment is cut into equal-information windows. A window starts from BOS with a
fresh model context; byte by byte the model predicts the next byte, the prediction is
quantized to integer frequencies, and the arithmetic coder narrows its interval by
the byte's frequency; the window closes before the first byte that would leave no
W-bit code point inside the interval (or at max_window_bytes, or at the segment's
end), and its code is the smallest code point inside. A byte that does not fit even
an empty window is escaped: the window's code is the raw byte, its count 0.

The one concession to the engine is the shape of the model call: the lane sits in one
row (`row`, 0 by default) of a call with `group` rows (the rest idle), because the
engine's results are defined for that fixed shape (they are batch-invariant within it,
not across shapes). Which row must not matter: the engine runs a segment in any lane.
"""

from __future__ import annotations

import torch

from coder.quantize import quantize_logits
from coder.reference import window_loop

from .config import EngineConfig
from .int_reference import IntReference
from .model import BOS, ByteLM
from .numerics import Precision, autocast


@torch.no_grad()
def reference_windows(model: ByteLM, segment: bytes, cfg: EngineConfig,
                      precision: Precision = Precision.FP32, row: int = 0) -> tuple[list[int], list[int]]:
    """(codes, byte counts) of one segment's windows."""
    device = next(model.parameters()).device
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float32
    G = cfg.group
    with autocast(device, precision):
        kv = model.new_cache(G, cfg.max_window_bytes, dtype=dtype)  # slot 0: BOS, for every window

        def next_freq(prev: int | None, n: int) -> list[int]:
            # The n-th byte of a window is predicted from BOS and the n bytes before it;
            # the latest, prev, goes into the cache at slot n. `row` is our lane; the
            # other rows idle as the engine's do.
            toks = torch.zeros(G, dtype=torch.long, device=device)
            slots = torch.ones(G, dtype=torch.long, device=device)
            toks[row], slots[row] = (BOS, 0) if prev is None else (prev, n)
            return quantize_logits(model.step(toks, slots, kv))[row].tolist()

        return window_loop(segment, next_freq, cfg.coder.window_bits, cfg.max_window_bytes)


def int_reference_windows(ref: IntReference, segment: bytes, cfg: EngineConfig) -> tuple[list[int], list[int]]:
    """(codes, byte counts) of one segment's windows under the integer model, every
    frequency row from the NumPy oracle (no torch, no batch: the engine's int8 path must
    give exactly these)."""
    window: list[int] = []

    def next_freq(prev: int | None, n: int) -> list[int]:
        window[:] = [BOS] if prev is None else window + [prev]
        return ref.frequencies(ref.logits(window)[-1]).tolist()

    return window_loop(segment, next_freq, cfg.coder.window_bits, cfg.max_window_bytes)
