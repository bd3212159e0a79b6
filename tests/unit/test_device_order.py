"""The engine's host/device ordering, checked on a CPU (tests/device_fakes.py): results
read only after their step is waited on, inputs never rewritten while their copy is in
flight, nothing left in flight when a call fails, a failed graph capture that falls
back to eager calls, captured calls that never sync with the host, compressors freed
without the garbage collector, and lane position that does not change a bit."""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from compressor_model import engine as engine_module
from compressor_model.engine import EngineConfig, NeuralCompressor
from compressor_model.int_reference import IntReference
from compressor_model.model import CONFIGS, ByteLM
from compressor_model.numerics import Precision
from compressor_model.reference import int_reference_windows, reference_windows
from compressor_model.runner import StaticCall
from compressor_model.segment import SegmentConfig
from pipeline.backends.model_actor import DEVICE_ERROR_EXIT
from tests.device_fakes import DeferredLayer, checking_capture, failing_capture
from tests.engine_fixtures import code_docs, tiny_compressor, tiny_model
from tests.pipeline_fixtures import tiny_checkpoint
from tests.procs import env

CFG = dict(lanes=32, group=8, lane_sets=2, device="cpu", compile=False)  # two sets: one is in flight while the other is coded


def on(layer) -> NeuralCompressor:
    m = tiny_model()
    return NeuralCompressor(m, m.fingerprint(), EngineConfig(**CFG), SegmentConfig(call_positions=512), layer=layer)


@pytest.fixture(scope="module")
def docs():
    return [d[:1200] for d in code_docs(6)] + [b"x", "ünïcödé ✓\n".encode()]


@pytest.fixture(scope="module")
def expected(docs):
    """What the plain CPU engine makes: the bits every layer must reproduce."""
    comp = on(None)
    th = comp.calibrate(docs)
    return th, comp.compress(docs, th), comp.entropies(docs)


def same_records(a, b) -> bool:
    return all(x.n_bytes == y.n_bytes and all(np.array_equal(getattr(x, f), getattr(y, f))
                                              for f in ("seg_off", "win_off", "window_counts", "window_codes", "symbols"))
               for x, y in zip(a, b, strict=True))


def test_deferred_copies_and_poisoned_results_give_the_same_bits(docs, expected):
    """On this layer a result read before its step is waited on reads poison, and an input
    rewritten while its copy is in flight reaches the model rewritten: either would
    change the bits."""
    th, records, entropies = expected
    layer = DeferredLayer()
    comp = on(layer)
    assert all(np.array_equal(a, b) for a, b in zip(comp.entropies(docs), entropies))
    assert same_records(comp.compress(docs, th), records)
    assert comp.decode(records) == docs
    assert layer.queue == []


def test_a_failure_mid_loop_leaves_nothing_in_flight(docs, expected, monkeypatch):
    th, _, _ = expected
    layer = DeferredLayer()
    comp = on(layer)
    offs = comp.segment(docs, th)
    calls = []

    class Failing(engine_module.LaneEncoder):
        def advance(self, *args):
            calls.append(args)
            if len(calls) == 3:
                raise RuntimeError("coder failed")
            return super().advance(*args)

    monkeypatch.setattr(engine_module, "LaneEncoder", Failing)
    data = np.frombuffer(b"".join(docs), np.uint8)
    base = np.cumsum([0] + [len(d) for d in docs[:-1]])
    seg_off = np.unique(np.concatenate([off + b for off, b in zip(offs, base)])).astype(np.int64)
    assert len(seg_off) > 2 * CFG["lanes"]  # both lane sets busy: one is in flight when the other fails
    with pytest.raises(RuntimeError, match="coder failed"):
        comp.encode_segments(data, seg_off)
    assert layer.queue == []  # the other set's step was waited for before the error left
    monkeypatch.undo()
    assert same_records(comp.compress(docs, th, seg_offsets=offs), expected[1])


def test_a_failed_capture_falls_back_to_eager_calls(docs, expected):
    th, records, _ = expected
    layer = DeferredLayer(capture=failing_capture)
    comp = on(layer)
    with pytest.warns(RuntimeWarning, match="capture failed, this call runs eagerly"):
        got = comp.compress(docs, th)
    assert same_records(got, records)
    tried = layer.captures
    assert tried > 0
    assert same_records(comp.compress(docs, th), records) and layer.captures == tried  # each call tried once


def test_captured_calls_never_sync_with_the_host(docs, expected):
    th, records, _ = expected
    layer = DeferredLayer(capture=checking_capture)
    comp = on(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a violation would only make that call fall back to eager: fail instead
        assert same_records(comp.compress(docs, th), records) and comp.decode(records) == docs
    assert layer.captures >= 3  # entropy rows, encode and decode steps
    for bad in (lambda: torch.ones(3).sum().item(), lambda: torch.arange(4).nonzero(),
                lambda: torch.zeros(2).copy_(torch.tensor([1.0, 2.0]))):
        with pytest.raises(AssertionError, match="a captured call ran"):
            checking_capture(bad)
        with pytest.warns(RuntimeWarning, match="capture failed"):
            StaticCall(bad, checking_capture)()  # as the engine meets it: the call still runs, eagerly


def test_warm_up_captures_every_call_and_changes_no_bit(docs, expected):
    """After warm_up no call captures any more (a benchmark's timed region holds no
    capture), and what it ran leaves no trace in the results."""
    th, records, entropies = expected
    layer = DeferredLayer(capture=checking_capture)
    comp = on(layer)
    comp.warm_up()
    layer.run_until(None)
    captured = layer.captures
    assert captured == len(comp._rows.calls) + sum(len(s.calls) for s in comp._steps.values())
    assert same_records(comp.compress(docs, th), records) and comp.decode(records) == docs
    assert all(np.array_equal(a, b) for a, b in zip(comp.entropies(docs), entropies))
    assert layer.captures == captured


class WeightCasts(TorchDispatchMode):
    """Counts fp32 -> bf16 casts of matrices: what autocast does to every Linear weight
    in every call when the weights are kept in fp32."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.ops.aten._to_copy.default and args[0].dim() == 2 and args[0].dtype == torch.float32
                and kwargs.get("dtype") == torch.bfloat16):
            self.n += 1
        return func(*args, **kwargs)


def test_bf16_weights_are_cast_once_not_in_every_step():
    comp = tiny_compressor(precision=Precision.BF16, device="cpu")
    assert all(m.weight.dtype == torch.bfloat16 for m in comp.model.modules() if isinstance(m, torch.nn.Linear))
    assert all(p.dtype == torch.float32 for p in tiny_model().parameters())  # the caller's model is untouched
    data = np.frombuffer(b"def f(x):\n    return x\n" * 3, np.uint8)
    casts = WeightCasts()
    with casts:
        comp.encode_segments(data, np.array([0, 10, len(data)], np.int64))
    assert casts.n == 0


def test_a_dropped_compressor_is_freed_without_the_garbage_collector(docs, expected):
    """No reference cycles: buffers, KV caches and (on CUDA) graphs go as soon as the
    compressor does, not whenever a collection runs (possibly inside another one's
    graph capture)."""
    th, _, _ = expected
    gc.collect()
    gc.disable()
    try:
        comp = tiny_compressor(**CFG)
        comp.compress(docs[:2], th)
        gone = [weakref.ref(comp), weakref.ref(comp._steps[engine_module.StepMode.ENCODE]), weakref.ref(comp._rows),
                weakref.ref(comp.kv[0].v)]
        del comp
        assert [r() is None for r in gone] == [True] * len(gone)
    finally:
        gc.enable()


def lane_position_case():
    """The shipped-size case on a GPU (paper40m shapes, group 4096, random weights: where
    split-K kernels could make rows round differently), the tiny model on a CPU."""
    if torch.cuda.is_available():
        torch.manual_seed(0)
        return ByteLM(CONFIGS["paper40m"]).cuda().eval(), EngineConfig(lanes=4096, group=4096, device="cuda")
    return tiny_model(), EngineConfig(lanes=16, group=8, device="cpu", compile=False)


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.INT8])
def test_a_segment_codes_the_same_in_any_row_of_a_call(docs, precision):
    """Float: rows of one call must not round differently. int8: exact by construction,
    and the oracle (one lane, NumPy) agrees wherever the segment sits."""
    model, cfg = lane_position_case()
    cfg = dataclasses.replace(cfg, precision=precision)
    comp = NeuralCompressor(model, model.fingerprint(), cfg, SegmentConfig(call_positions=512))
    segs = [d[a:a + 24] for d in docs[:3] for a in (0, 100)]
    data = np.frombuffer(b"".join(segs), np.uint8)
    seg_off = np.concatenate([[0], np.cumsum([len(s) for s in segs])]).astype(np.int64)
    win = comp.encode_segments(data, seg_off)
    ref = IntReference(comp.model.state_dict(), model.cfg) if precision is Precision.INT8 else None
    for k, seg in enumerate(segs):
        a, b = win.win_off[k], win.win_off[k + 1]
        engine = (win.codes[a:b].tolist(), win.counts[a:b].tolist())
        if precision is Precision.INT8:
            assert int_reference_windows(ref, seg, comp.cfg) == engine, k
            continue
        for row in (0, (cfg.group // 2 + k) % cfg.group, cfg.group - 1):
            assert reference_windows(comp.model, seg, comp.cfg, comp.precision, row=row) == engine, (k, row)


DEVICE_ERROR = """
import sys, numpy as np, torch
from pipeline.config import load_config
from pipeline.backends.model_actor import ModelService
svc = ModelService(load_config(None, ["model.checkpoint=" + sys.argv[1], "engine.lanes=16", "engine.group=8", "engine.compile=false"]))
def broken(*args):
    raise torch.AcceleratorError("CUDA error: device-side assert triggered")
svc.comp.encode_segments = broken
svc.encode(np.frombuffer(b"x = 1\\n", np.uint8), np.array([0, 6], np.int64))
print("still alive")
"""


def test_a_device_error_ends_the_model_process(tmp_path):
    """So that Ray restarts the actor (a killed model actor's shards are retried and end
    byte-identical: tests/e2e/test_faults.py) instead of keeping one whose CUDA context
    fails every call."""
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    res = subprocess.run([sys.executable, "-c", DEVICE_ERROR, ckpt], capture_output=True, text=True, timeout=120, env=env())
    assert res.returncode == DEVICE_ERROR_EXIT and "still alive" not in res.stdout, res.stderr[-2000:]
    assert "device error, exiting so that Ray restarts it: CUDA error: device-side assert triggered" in res.stderr
