"""The trainer-side reader: mixing schedule, pairs, packing, sharding, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.dataset import DatasetConfig, MixConfig, ProxyDataset, ProxyLoader, ProxyStream, attention_mask, cu_seqlens, labels
from pipeline.vocab import CMP_CLOSE, CMP_OPEN, PAD, RAW_CLOSE, RAW_OPEN, Vocab
from tests.dataset_fixtures import synthetic_output


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic_output(root)
    return str(root)


def stream(out_dir, slot=0, n_slots=1, batch=4, workers=1, worker=0, **kw):
    cfg = DatasetConfig(urls=[out_dir], **kw)
    ds = ProxyDataset(cfg, batch)
    s = ProxyStream(cfg, ds.units, ds.vocab, slot, n_slots, batch, workers, worker)
    s.record = []
    return s


def view_fraction(samples):
    views = [v for s in samples for v in s.views]
    return sum(v == "cmp" for v in views) / len(views), len(views)


def within(frac, r, n, sigmas=4.0):
    return abs(frac - r) <= sigmas * math.sqrt(r * (1 - r) / n)


def test_compressed_fraction_after_warmup(out_dir):
    s = stream(out_dir, seq_len=512, epochs=12, mix=MixConfig(r_end=0.9, warmup_steps=0))
    list(s)
    frac, n = view_fraction(s.record)
    assert n == 12 * 300 and within(frac, 0.9, n)
    assert all(len(x.views) == 1 for x in s.record)


@pytest.mark.parametrize("r", [0.7, 0.3])
def test_pairs_only_in_warmup_and_fraction_kept(out_dir, r):
    s = stream(out_dir, seq_len=256, epochs=10, mix=MixConfig(r_start=r, r_end=r, warmup_steps=100))
    list(s)
    warm = [x for x in s.record if x.step < 100]
    after = [x for x in s.record if x.step >= 100]
    assert len(warm) > 500 and len(after) > 500
    assert any(len(x.views) == 2 for x in warm) and all(len(x.views) == 1 for x in after)
    for part in (warm, after):
        frac, n = view_fraction(part)
        assert within(frac, r, n), (frac, r, n)
    # pairs come in both orders
    orders = {x.views for x in warm if len(x.views) == 2}
    assert orders == {("raw", "cmp"), ("cmp", "raw")}


def test_schedule_ramps_linearly():
    mix = MixConfig()
    assert (mix.r(0), mix.r(5000), mix.r(10_000), mix.r(10**6)) == (0.4, 0.65, 0.9, 0.9)


def test_packing_reproduces_samples_and_marks_every_boundary(out_dir):
    s = stream(out_dir, seq_len=128, epochs=1, mix=MixConfig(warmup_steps=50))
    seqs = list(s)
    vocab = s.vocab
    flat, ids = [], []
    for k, seq in enumerate(seqs):
        t, d = seq["tokens"].numpy(), seq["doc_ids"].numpy()
        assert t.shape == (128,) and d.shape == (128,)
        assert ((d == -1) == (t == PAD)).all()  # padding, and only padding, is unmarked
        real = d >= 0
        assert (np.diff(d[real]) >= 0).all() and d[real][0] == 0  # segments numbered in order
        flat.append(t[real])
        ids += [(k, i) for i in d[real]]
    flat = np.concatenate(flat)
    # Rebuild each sample's tokens from the data and walk the packed stream.
    pos = 0
    table = {}
    for x in s.record:
        from pipeline.dataset import _UnitData

        data = table.setdefault(x.unit, _UnitData(s.units[x.unit], vocab, {}))
        expect = data.tokens(x.row, x.views)
        assert len(expect) == x.length
        assert np.array_equal(flat[pos : pos + x.length], expect)
        # a sample occupies one segment id per sequence it touches, shared with nothing else
        touched = set(ids[pos : pos + x.length])
        assert len(touched) == len({k for k, _ in touched})
        pos += x.length
    assert pos == len(flat)
    opens = {RAW_OPEN, CMP_OPEN}
    assert flat[0] in opens and {RAW_CLOSE, CMP_CLOSE} >= {flat[-1]}


def test_mask_labels_and_cu_seqlens():
    d = torch.tensor([0, 0, 0, 1, 1, 2, -1, -1])
    t = torch.arange(8)
    m = attention_mask(d)
    assert m[2, 0] and not m[3, 2] and m[4, 3] and not m[0, 1] and not m[6, 6]
    assert labels(t, d).tolist() == [1, 2, -100, 4, -100, -100, -100, -100]
    assert cu_seqlens(d).tolist() == [0, 3, 5, 6, 8]


def test_ranks_and_workers_cover_every_document_once_per_epoch(out_dir):
    seen = []
    for rank in range(2):
        for worker in range(2):
            s = stream(out_dir, slot=rank * 2 + worker, n_slots=4, batch=2, workers=2, worker=worker, seq_len=256,
                       epochs=1, mix=MixConfig(warmup_steps=0))
            list(s)
            seen.append({(x.unit, x.row) for x in s.record})
    union = set().union(*seen)
    assert sum(map(len, seen)) == len(union) == 300  # disjoint, and nothing missing
    with pytest.raises(ValueError, match="cannot feed 16 rank x worker slots"):
        list(stream(out_dir, slot=0, n_slots=16, seq_len=64, epochs=1))


def test_deterministic_for_a_seed(out_dir):
    def first(seed):
        cfg = DatasetConfig(urls=[out_dir], seq_len=64, seed=seed)
        return [b["tokens"] for _, b in zip(range(3), ProxyLoader(cfg, batch_size=2))]

    a, b, c = first(1), first(1), first(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_with_the_identical_next_batch(out_dir, workers):
    cfg = DatasetConfig(urls=[out_dir], seq_len=96, seed=3, mix=MixConfig(warmup_steps=6))
    loader = ProxyLoader(cfg, batch_size=3, num_workers=workers)
    it = iter(loader)
    for _ in range(7):
        next(it)
    state = loader.state_dict()
    expected = [next(it) for _ in range(2)]
    fresh = ProxyLoader(cfg, batch_size=3, num_workers=workers)
    fresh.load_state_dict(state)
    got = [b for _, b in zip(range(2), fresh)]
    for e, g in zip(expected, got):
        assert torch.equal(e["tokens"], g["tokens"]) and torch.equal(e["doc_ids"], g["doc_ids"])
        assert torch.equal(e["step"], g["step"])
    bad = ProxyLoader(cfg, batch_size=4, num_workers=workers)
    with pytest.raises(ValueError, match="batch_size was 3"):
        bad.load_state_dict(state)


def test_vocab_layout():
    v = Vocab()
    assert v.size == 64 + 256 + 65536
    assert v.raw(b"\x00\xff").tolist() == [RAW_OPEN, 64, 64 + 255, RAW_CLOSE]
    assert v.compressed(np.array([0, 65535])).tolist() == [CMP_OPEN, 320, 320 + 65535, CMP_CLOSE]
