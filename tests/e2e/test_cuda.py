"""On CUDA only (skipped elsewhere; `make bench-gpu` runs them on a GPU machine): CUDA
graph replay computes exactly what eager calls compute, both are batch-invariant, and
`auto` chooses bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor_model.engine import EngineConfig, NeuralCompressor
from compressor_model.numerics import Precision
from compressor_model.segment import SegmentConfig
from tests.engine_fixtures import code_docs, tiny_model

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def cuda_compressor(graphs: bool, model=None, lanes: int = 64, group: int = 16, sets: int = 2, **kw) -> NeuralCompressor:
    m = model or tiny_model()
    cfg = EngineConfig(lanes=lanes, group=group, lane_sets=sets, device="cuda", cuda_graphs=graphs, **kw)
    return NeuralCompressor(m, m.fingerprint(), cfg, SegmentConfig(call_positions=512))


def same(a, b) -> bool:
    return a.n_bytes == b.n_bytes and all(np.array_equal(getattr(a, f), getattr(b, f))
                                          for f in ("seg_off", "win_off", "window_counts", "window_codes", "symbols"))


@pytest.fixture(scope="module")
def docs():
    return list(code_docs(10)) + [b"x", b"\x00" * 300]


def test_auto_precision_is_bf16_on_cuda():
    comp = cuda_compressor(graphs=True)
    assert comp.precision is Precision.BF16 and "|bf16|" in comp.numerics
    assert torch.cuda.get_device_name() in comp.numerics


@pytest.mark.parametrize("precision", [Precision.BF16, Precision.FP32])
def test_graph_replay_is_bit_identical_to_eager(docs, precision):
    graph, eager = cuda_compressor(True, precision=precision), cuda_compressor(False, precision=precision)
    th = eager.calibrate(docs)
    assert graph.calibrate(docs) == th
    for d in docs:  # entropies: every row shape, replayed vs eager
        assert np.array_equal(graph.entropies([d])[0], eager.entropies([d])[0])
    a, b = graph.compress(docs, th), eager.compress(docs, th)
    assert all(same(x, y) for x, y in zip(a, b))
    assert graph.verify(a, docs) == [True] * len(docs) and eager.verify(b, docs) == [True] * len(docs)
    assert graph.namespace == eager.namespace


def test_graphs_are_batch_invariant(docs):
    comp = cuda_compressor(True)
    th = comp.calibrate(docs)
    together = comp.compress(docs, th)
    alone = [comp.compress([d], th)[0] for d in docs]
    reversed_ = comp.compress(docs[::-1], th)[::-1]
    one_set = cuda_compressor(True, lanes=32, sets=1).compress(docs, th)
    for i in range(len(docs)):
        assert same(together[i], alone[i]) and same(together[i], reversed_[i]) and same(together[i], one_set[i])


def test_shipped_model_round_trips_on_the_gpu(docs):
    comp = NeuralCompressor.load(None, EngineConfig(lanes=1024, group=512, device="cuda"))
    th = comp.calibrate(docs)
    recs = comp.compress(docs, th)
    assert comp.decode(recs) == docs
    assert sum(len(r.symbols) for r in recs) < sum(map(len, docs)) / 2  # it compresses


def test_compressors_share_one_warm_up_stream_and_free_their_graphs(docs):
    """Graph warm-ups of every compressor use one side stream per device (each stream
    costs a cuBLAS workspace), and a dropped compressor's graphs and buffers go at once."""
    import gc
    import weakref

    from compressor_model.runner import _warmup_stream

    _warmup_stream.cache_clear()
    a, b = cuda_compressor(True), cuda_compressor(True, lanes=32, sets=1)
    th = a.calibrate(docs)
    a.compress(docs, th)
    b.compress(docs, th)
    assert _warmup_stream.cache_info().currsize == 1
    before = torch.cuda.memory_allocated()
    gc.disable()
    try:
        gone = weakref.ref(b)
        del b
        assert gone() is None and torch.cuda.memory_allocated() < before
    finally:
        gc.enable()
