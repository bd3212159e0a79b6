"""Segmentation: entropy chunking covers every byte, rules match their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compressor_model.model import BOS
from compressor_model.segment import (
    EntropyStats,
    SegmentConfig,
    SegmenterKind,
    Thresholds,
    _rows_for,
    calibrate_thresholds,
    entropies,
    row_entropy,
    row_lengths,
    segment_offsets,
)
from tests.engine_fixtures import code_docs, tiny_model


def eager(model):
    """The plain forward `entropies` runs rows through (the engine's is the same
    computation on static buffers)."""
    return lambda x: row_entropy(model, torch.from_numpy(x)).detach().numpy()


def entropies_of(model, docs, cfg=SegmentConfig(call_positions=512), stats=None):
    return entropies(eager(model), model.cfg.block_size, docs, cfg, stats)


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 127, 128, 129, 300, 1000])
def test_rows_cover_each_position_once(n):
    block, overlap = 128, 32
    seen = np.zeros(n, int)
    rows = _rows_for(n, block, overlap)
    for start, row_len, first, used in rows:
        assert row_len in row_lengths(block) and first + used <= row_len
        assert start + row_len <= max(n, row_len)  # no row runs past the end of a long document
        assert first == 0 or first >= overlap  # later rows keep at least `overlap` context
        seen[start + first : start + first + used] += 1
    assert (seen == 1).all()
    if n > block:  # full rows only; cost block / (block - overlap) per byte, plus the last row
        assert {r[1] for r in rows} == {block}
        assert len(rows) * block <= n * block / (block - overlap) + block


def test_segmentation_costs_about_one_position_per_byte_on_real_code():
    docs = [f for f in code_docs(40, max_len=40_000)]
    st = EntropyStats()
    entropies_of(tiny_model(), docs, SegmentConfig(call_positions=1024), st)
    assert st.useful == sum(map(len, docs))
    assert st.positions / st.useful <= 1.2  # block 128, overlap 16: 1.14 for endless documents


def direct_entropy(model, doc: bytes) -> np.ndarray:
    """One full-context forward pass per position window, no chunking logic."""
    x = torch.tensor([[BOS] + list(doc[:-1])])
    logits, _ = model(x)
    logp = torch.log_softmax(logits.float(), -1)
    return (-(logp.exp() * logp).sum(-1) / math.log(2))[0].detach().numpy()


def test_entropies_match_a_direct_forward_pass_for_short_docs():
    model = tiny_model()
    docs = [d[:100] for d in code_docs(5)]
    hs = entropies_of(model, docs, SegmentConfig(call_positions=3 * 128))
    for d, h in zip(docs, hs):
        assert h.shape == (len(d),)
        np.testing.assert_allclose(h, direct_entropy(model, d), rtol=1e-4, atol=1e-4)


def test_entropies_do_not_depend_on_batch_neighbours():
    model = tiny_model()
    docs = list(code_docs(6))
    together = entropies_of(model, docs)
    for i, d in enumerate(docs):
        alone = entropies_of(model, [d])[0]
        assert np.array_equal(alone, together[i])


def test_long_documents_get_an_entropy_for_every_byte():
    model = tiny_model()  # block size 128
    doc = b"".join(code_docs(3))
    (h,) = entropies_of(model, [doc], SegmentConfig(call_positions=512, context_overlap=32))
    assert h.shape == (len(doc),) and np.isfinite(h).all() and (h > 0).all()
    np.testing.assert_allclose(h[:128], direct_entropy(model, doc[:128]), rtol=1e-4, atol=1e-4)
    # the last row ends at the document's end: its bytes see the 127 before them
    np.testing.assert_allclose(h[-10:], direct_entropy(model, doc[-128:])[-10:], rtol=1e-4, atol=1e-4)


def test_entropy_rule_matches_definition():
    rng = np.random.default_rng(0)
    doc = bytes(rng.integers(32, 127, 500, dtype=np.uint8))
    h = rng.gamma(2.0, 1.0, 500).astype(np.float32)
    th = Thresholds(theta_abs=4.0, theta_jump=1.5, percentile=95, sample_docs=1, sample_bytes=500, fingerprint="x")
    off = segment_offsets(doc, h, SegmentConfig(max_segment_bytes=10**6), th)
    expect = [0] + [i for i in range(1, 500) if h[i] > 4.0 or h[i] - h[i - 1] > 1.5] + [500]
    assert off.tolist() == expect


def test_other_segmenters_and_max_length():
    doc = b"a = 1\nbb = 2\n\nccc = 3"
    assert segment_offsets(doc, None, SegmentConfig(kind=SegmenterKind.NEWLINE)).tolist() == [0, 6, 13, 14, 21]
    assert segment_offsets(doc, None, SegmentConfig(kind=SegmenterKind.FIXED, fixed_bytes=8)).tolist() == [0, 8, 16, 21]
    capped = segment_offsets(doc, None, SegmentConfig(kind=SegmenterKind.NEWLINE, max_segment_bytes=4))
    assert capped.tolist() == [0, 4, 6, 10, 13, 14, 18, 21]
    assert segment_offsets(b"", None, SegmentConfig(kind=SegmenterKind.NEWLINE)).tolist() == [0]
    with pytest.raises(ValueError, match="needs entropies and calibrated thresholds"):
        segment_offsets(doc, None, SegmentConfig())


def test_calibrate_gives_the_percentiles():
    model = tiny_model()
    docs = list(code_docs(4))
    hs = entropies_of(model, docs)
    th = calibrate_thresholds(hs, 90, "fp")
    assert th.theta_abs == pytest.approx(np.percentile(np.concatenate(hs), 90))
    assert th.theta_jump == pytest.approx(np.percentile(np.concatenate([np.diff(h) for h in hs]), 90))
    assert th.sample_bytes == sum(map(len, docs)) and Thresholds.from_json(th.to_json()) == th
