"""A tiny random-weight compressor and real-code documents for engine tests."""

from __future__ import annotations

import functools

import torch

from compressor_model.engine import EngineConfig, NeuralCompressor
from compressor_model.model import CONFIGS, ByteLM
from compressor_model.segment import SegmentConfig
from compressor_model.stdlib import stdlib_files


@functools.lru_cache(maxsize=None)
def tiny_model(seed: int = 0) -> ByteLM:
    torch.manual_seed(seed)
    m = ByteLM(CONFIGS["tiny"])
    with torch.no_grad():  # sharpen the random head so windows hold several bytes
        m.head.weight.mul_(40)
    return m


def tiny_compressor(lanes: int = 16, group: int = 8, seg: SegmentConfig = SegmentConfig(call_positions=512), **kw) -> NeuralCompressor:
    """Eager unless asked (compile=True): compiling is slow, and cannot change an integer
    result (test_intmodel checks that once)."""
    m = tiny_model()
    return NeuralCompressor(m, m.fingerprint(), EngineConfig(lanes=lanes, group=group, **{"compile": False, **kw}), seg)


@functools.lru_cache(maxsize=None)
def code_docs(n: int = 12, max_len: int = 3000) -> tuple[bytes, ...]:
    """n real stdlib source files, smallest first above 200 bytes, cut to max_len."""
    files = sorted(stdlib_files("heldout"), key=lambda f: (len(f.text), f.path))
    docs = [f.text.encode()[:max_len] for f in files if len(f.text) > 200]
    return tuple(docs[:n])
