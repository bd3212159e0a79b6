"""The neural compressor end to end with a tiny model: lossless, deterministic,
batch-invariant, cache-consistent, and verification that catches tampering."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cache.entry import _HEADER, pack_entry
from cache.local import LocalSegmentCache
from compressor_model.engine import EngineConfig, NeuralCompressor, Precision
from compressor_model.model import ByteLM, load_checkpoint
from compressor_model.reference import reference_windows
from compressor_model.segment import SegmentConfig, SegmenterKind
from pipeline.backends.neural import CachedSegments
from tests.engine_fixtures import code_docs, tiny_compressor, tiny_model


@pytest.fixture(scope="module")
def comp():
    return tiny_compressor()


@pytest.fixture(scope="module")
def thresholds(comp):
    return comp.calibrate(list(code_docs(4)))


def records_equal(a, b):
    fields = ("seg_off", "win_off", "window_counts", "window_codes", "sym_off", "symbols")
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields) and a.n_bytes == b.n_bytes


def test_round_trip_on_real_code(comp, thresholds):
    docs = list(code_docs(12)) + [b"", b"x", b"\x00" * 100, "ünïcödé ✓\n".encode()]
    records = comp.compress(docs, thresholds)
    assert comp.verify(records, docs) == [True] * len(docs)
    for r, d in zip(records, docs):
        assert r.seg_off[0] == 0 and r.seg_off[-1] == len(d)
        assert np.maximum(r.window_counts, 1).sum() == len(d)
        assert (r.window_counts <= comp.cfg.max_window_bytes).all()


def test_deterministic_and_independent_of_batching(comp, thresholds):
    docs = list(code_docs(8))
    together = comp.compress(docs, thresholds)
    again = comp.compress(docs, thresholds)
    reversed_ = comp.compress(docs[::-1], thresholds)[::-1]
    alone = [comp.compress([d], thresholds)[0] for d in docs]
    other_lanes = tiny_compressor(lanes=32).compress(docs[3:5], thresholds)
    for i in range(len(docs)):
        assert records_equal(together[i], again[i])
        assert records_equal(together[i], reversed_[i])
        assert records_equal(together[i], alone[i])
    assert records_equal(together[3], other_lanes[0]) and records_equal(together[4], other_lanes[1])


def test_cache_serves_identical_records_and_rejects_bad_entries(comp, thresholds):
    docs = list(code_docs(6))
    cache = LocalSegmentCache()
    store = CachedSegments(cache, comp.namespace)
    first = comp.compress(docs, thresholds, store=store)
    assert sum(r.cache_hits for r in first) == 0 and len(cache) > 0
    second = comp.compress(docs, thresholds, store=store)
    assert all(r.cache_hits == len(r.seg_off) - 1 for r in second)
    second_blobs = dict(cache._d)
    assert all(records_equal(a, b) for a, b in zip(first, second))
    # Corrupt every entry: the compressor must notice and recompute, same output.
    for k in list(cache._d):
        blob = bytearray(cache._d[k])
        blob[-1] ^= 0xFF
        cache._d[k] = bytes(blob)
    third = comp.compress(docs, thresholds, store=store)
    assert sum(r.cache_hits for r in third) == 0
    assert all(records_equal(a, b) for a, b in zip(first, third))
    # Entries written by a different compressor under these very keys (a key collision,
    # or a store shared by mistake) fail the namespace check and are recomputed.
    for k in list(cache._d):
        blob = second_blobs[k]
        _, _, _, seg_len, n, _ = _HEADER.unpack_from(blob)
        body = blob[_HEADER.size :]
        codes, counts = np.frombuffer(body[: 4 * n], np.uint32), np.frombuffer(body[4 * n :], np.int32)
        cache._d[k] = pack_entry("another-fingerprint", seg_len, codes, counts)  # same content, foreign tag
    fourth = comp.compress(docs, thresholds, store=store)
    assert sum(r.cache_hits for r in fourth) == 0
    assert all(records_equal(a, b) for a, b in zip(first, fourth))
    # A compressor with other settings has its own namespace: no cross hits.
    other = tiny_compressor(max_window_bytes=16)
    assert other.namespace != comp.namespace
    assert sum(r.cache_hits for r in other.compress(docs, thresholds, store=CachedSegments(cache, other.namespace))) == 0


def test_verify_catches_tampering(comp, thresholds):
    docs = list(code_docs(3))
    recs = comp.compress(docs, thresholds)
    bad = recs[1]
    bad.window_codes = bad.window_codes.copy()
    bad.window_codes[len(bad.window_codes) // 2] ^= 0x1
    assert comp.verify(recs, docs) == [True, False, True]
    assert comp.verify(comp.compress(docs, thresholds), [docs[0], docs[1][:-1] + b"?", docs[2]]) == [True, False, True]


def test_a_window_longer_than_the_kv_cache_is_a_bad_segment_not_a_crash(thresholds):
    """A damaged count that still fits its segment must not make the decoder ask the
    model for a slot past the KV cache (an IndexError on a CPU, a device-side assert
    that poisons the process on a GPU): the document just fails to decode."""
    comp = tiny_compressor(max_window_bytes=4)
    docs = [b"x = 1\n" * 40]
    rec = comp.compress(docs, seg_offsets=[np.array([0, 12, len(docs[0])], np.int64)])[0]
    assert comp.decode([rec]) == docs and rec.window_counts.max() <= 4
    rec.window_counts = rec.window_counts.copy()
    rec.window_counts[0] = 5  # one window claims 5 bytes: inside its 12-byte segment, past max_window_bytes
    assert comp.decode([rec]) == [None]


@pytest.mark.parametrize("kind", [SegmenterKind.NEWLINE, SegmenterKind.FIXED])
def test_other_segmenters_round_trip(kind):
    comp = tiny_compressor(seg=SegmentConfig(kind=kind, call_positions=512, fixed_bytes=40))
    docs = list(code_docs(4))
    recs = comp.compress(docs)
    assert comp.verify(recs, docs) == [True] * 4
    assert comp.stats.seg_positions == 0  # no model work for these segmenters


@pytest.mark.parametrize("window_bits,symbol_bits", [(8, 8), (8, 16), (32, 16)])
def test_other_window_and_symbol_sizes(window_bits, symbol_bits, thresholds):
    comp = tiny_compressor(window_bits=window_bits, symbol_bits=symbol_bits)
    docs = list(code_docs(4))
    recs = comp.compress(docs, thresholds)
    assert comp.verify(recs, docs) == [True] * 4


def test_fp32_precision_round_trip(thresholds):
    comp = tiny_compressor(precision=Precision.FP32)
    docs = list(code_docs(3))
    assert comp.verify(comp.compress(docs, thresholds), docs) == [True] * 3


def test_checkpoints_round_trip_and_refuse_code(tmp_path):
    comp = tiny_compressor()
    path = tmp_path / "m.pt"
    torch.save(tiny_model().to_checkpoint(), path)  # comp.model is the engine's copy (bf16 Linears in bf16)
    again = NeuralCompressor.load(path, comp.cfg, comp.seg_cfg)
    assert again.fingerprint == comp.fingerprint and again.namespace == comp.namespace
    ckpt = load_checkpoint(path)
    ckpt["model"]["head.weight"][0, 0] += 1.0
    with pytest.raises(ValueError, match="fingerprint does not match"):
        ByteLM.from_checkpoint(ckpt)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('/tmp/pwned_by_checkpoint', 'w').write('x')",))

    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": Evil()}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        NeuralCompressor.load(evil)
    import os

    assert not os.path.exists("/tmp/pwned_by_checkpoint")


def test_lane_sets_and_thread_counts_do_not_change_a_bit(comp, thresholds):
    docs = list(code_docs(8))
    base = comp.compress(docs, thresholds)
    two_sets = tiny_compressor(lanes=32, lane_sets=2).compress(docs, thresholds)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        more_threads = tiny_compressor().compress(docs, thresholds)
    finally:
        torch.set_num_threads(threads)
    for i in range(len(docs)):
        assert records_equal(base[i], two_sets[i]) and records_equal(base[i], more_threads[i])
    with pytest.raises(ValueError, match="multiple of group"):
        tiny_compressor(lanes=24, group=8, lane_sets=2)


def test_auto_is_the_integer_model_and_float_modes_follow_the_hardware(monkeypatch):
    from compressor_model import numerics

    def on_cpu(**kw):  # a copy of the shared model: on a GPU machine the others keep theirs on the GPU
        m = copy.deepcopy(tiny_model())
        return NeuralCompressor(m, m.fingerprint(), EngineConfig(**{"lanes": 16, "group": 8, "device": "cpu", "compile": False, **kw}))

    comp = on_cpu()  # auto: int8 on every device; its numerics name the integer format only
    assert comp.precision is Precision.INT8 and comp.numerics == "int8-v1"
    fp32 = on_cpu(precision=Precision.FP32)  # float numerics name what float bits depend on
    assert "|fp32|" in fp32.numerics and torch.backends.cpu.get_cpu_capability() in fp32.numerics
    assert len({comp.namespace, fp32.namespace, on_cpu(precision=Precision.BF16).namespace}) == 3
    assert on_cpu(lanes=32, group=16).namespace == comp.namespace != on_cpu(lanes=32, group=16, precision=Precision.FP32).namespace
    cpu = torch.device("cpu")
    assert numerics.resolve(Precision.AUTO) is Precision.INT8 and numerics.resolve(Precision.FP32) is Precision.FP32
    assert numerics.resolve_float(Precision.FP32, cpu) is Precision.FP32 and numerics.resolve_float(Precision.BF16, cpu) is Precision.BF16
    with pytest.raises(ValueError, match="training runs in a float format"):
        numerics.resolve_float(Precision.INT8, cpu)
    # Training's auto: a GPU whose bf16 is emulated (T4, V100) runs fp32: torch counts
    # emulation as support by default.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert numerics.resolve_float(Precision.AUTO, torch.device("cuda")) is Precision.FP32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert numerics.resolve_float(Precision.AUTO, torch.device("cuda")) is Precision.BF16

    def decide(flags, speedup):
        numerics.cpu_prefers_bf16.cache_clear()
        monkeypatch.setattr(numerics, "cpu_flags", lambda: flags)
        monkeypatch.setattr(numerics, "probe_bf16_speedup", lambda: speedup)
        return numerics.resolve_float(Precision.AUTO, cpu)

    try:
        assert decide({"avx2", "fma"}, 9.0) is Precision.FP32  # emulated bf16: never, whatever a probe says
        assert decide({"avx512f", "avx512_bf16"}, 2.0) is Precision.BF16
        assert decide({"amx_bf16"}, 1.05) is Precision.FP32  # native but not faster here
        assert decide(None, 2.0) is Precision.BF16  # flags unreadable: the probe decides
    finally:
        numerics.cpu_prefers_bf16.cache_clear()


@pytest.mark.parametrize("max_window_bytes, precision", [(32, Precision.FP32), (7, Precision.FP32), (32, Precision.BF16)])
def test_lane_engine_matches_the_single_lane_reference(thresholds, max_window_bytes, precision):
    """The batched, lane-driven engine codes every segment exactly as the one-screen
    reference does (compressor_model/reference.py), which runs the fp32 model under
    autocast: in bf16 the engine's weights cast once give the same bits."""
    comp = tiny_compressor(max_window_bytes=max_window_bytes, precision=precision)
    docs = [d[:1500] for d in code_docs(3)] + ["ünïcödé ✓ \x00\x01".encode()]
    offs = comp.segment(docs, thresholds)
    segs = [d[a:b] for d, off in zip(docs, offs) for a, b in zip(off[:-1], off[1:])]
    data = np.frombuffer(b"".join(segs), np.uint8)
    seg_off = np.concatenate([[0], np.cumsum([len(s) for s in segs])]).astype(np.int64)
    win = comp.encode_segments(data, seg_off)
    assert len(segs) > 20
    for k, seg in enumerate(segs):
        a, b = win.win_off[k], win.win_off[k + 1]
        codes, counts = reference_windows(tiny_model(), seg, comp.cfg, comp.precision)
        assert (win.codes[a:b].tolist(), win.counts[a:b].tolist()) == (codes, counts), k
