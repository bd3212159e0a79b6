"""The stream of one slot: mixing schedule, pairs, linear-time packing, shuffle buffer."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from proxytrain import DatasetConfig, MixConfig, ProxyDataset, ProxyStream, View, Vocab
from proxytrain.source import RowGroup


def stream(out_dir, slot=0, n_slots=1, batch=4, workers=1, worker=0, **kw):
    kw.setdefault("epochs", 1)
    cfg = DatasetConfig(urls=[out_dir], **kw)
    ds = ProxyDataset(cfg, batch)
    s = ProxyStream(cfg, ds.units, ds.vocab, slot, n_slots, batch, workers, worker)
    s.record = []
    return s


def view_fraction(samples):
    views = [v for s in samples for v in s.views]
    return sum(v is View.CMP for v in views) / len(views), len(views)


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
    assert {x.views for x in warm if len(x.views) == 2} == {(View.RAW, View.CMP), (View.CMP, View.RAW)}


def test_schedule_ramps_linearly():
    mix = MixConfig()
    assert (mix.r(0), mix.r(5000), mix.r(10_000), mix.r(10**6)) == (0.4, 0.65, 0.9, 0.9)


def test_packing_reproduces_samples_and_marks_every_boundary(out_dir):
    s = stream(out_dir, seq_len=128, shuffle_sequences=0, mix=MixConfig(warmup_steps=50))
    seqs = list(s)
    vocab = s.vocab
    flat, ids = [], []
    for k, seq in enumerate(seqs):
        t, d, p = seq["tokens"].numpy(), seq["doc_ids"].numpy(), seq["position_ids"].numpy()
        assert t.shape == d.shape == p.shape == (128,)
        assert ((d == -1) == (t == vocab.pad)).all()  # padding, and only padding, is unmarked
        real = d >= 0
        assert (np.diff(d[real]) >= 0).all() and d[real][0] == 0
        for seg in np.unique(d[real]):
            assert p[d == seg].tolist() == list(range((d == seg).sum()))
        flat.append(t[real])
        ids += [(k, i) for i in d[real]]
    flat = np.concatenate(flat)
    pos, groups = 0, {}
    for x in s.record:  # rebuild each sample from the data and walk the packed stream
        data = groups.setdefault(x.unit, RowGroup(s.units[x.unit], {}))
        raw, sym = data.row(x.row, True)
        expect = vocab.sample(x.views, raw, sym)
        assert len(expect) == x.length and np.array_equal(flat[pos : pos + x.length], expect)
        touched = set(ids[pos : pos + x.length])  # one segment per sequence it touches
        assert len(touched) == len({k for k, _ in touched})
        pos += x.length
    assert pos == len(flat)
    assert flat[0] == vocab.bos and flat[-1] == vocab.eos


def test_long_document_is_built_once_not_per_sequence(make_output, tmp_path, monkeypatch):
    make_output(tmp_path, files=1, groups=1, docs_per_group=3, long_doc=200_000)
    calls = Counter()
    original = Vocab.sample

    def counting(self, views, raw, symbols):
        calls[len(symbols)] += 1
        return original(self, views, raw, symbols)

    monkeypatch.setattr(Vocab, "sample", counting)
    s = stream(str(tmp_path), seq_len=64, mix=MixConfig(r_start=1.0, r_end=1.0))
    seqs = list(s)
    assert len(seqs) > 600  # the long document spans hundreds of sequences ...
    assert sum(calls.values()) == 3  # ... and its tokens were built once


def test_shuffle_buffer_spreads_a_long_document_and_keeps_every_sequence(make_output, tmp_path):
    make_output(tmp_path, files=1, groups=4, docs_per_group=200, long_doc=20_000)

    def run(shuffle):
        s = stream(str(tmp_path), seq_len=64, shuffle_sequences=shuffle, mix=MixConfig(r_start=1.0, r_end=1.0))
        return [tuple(x["tokens"].tolist()) for x in s]

    plain, mixed = run(0), run(256)
    assert Counter(plain) == Counter(mixed) and plain != mixed
    first = RowGroup(ProxyDataset(DatasetConfig(urls=[str(tmp_path)]), 1).units[0], {})
    long_ids = set((first.row(0, False)[1].astype(np.int64) + 320).tolist())

    def longest_run(seqs):  # most consecutive sequences cut from the long document
        best = cur = 0
        for seq in seqs:
            cur = cur + 1 if sum(t in long_ids for t in seq) > 48 else 0
            best = max(best, cur)
        return best

    assert longest_run(plain) > 50  # the long document fills ~60 sequences in a row
    assert longest_run(mixed) <= 10, longest_run(mixed)  # a buffer 4x the document spreads it


def test_ranks_and_workers_cover_every_document_once_per_epoch(out_dir):
    seen = []
    for rank in range(2):
        for worker in range(2):
            s = stream(out_dir, slot=rank * 2 + worker, n_slots=4, batch=2, workers=2, worker=worker, seq_len=256,
                       mix=MixConfig(warmup_steps=0))
            list(s)
            seen.append({(x.unit, x.row) for x in s.record})
    union = set().union(*seen)
    assert sum(map(len, seen)) == len(union) == 300  # disjoint, and nothing missing
    with pytest.raises(ValueError, match="cannot feed 16 rank x worker slots"):
        list(stream(out_dir, slot=0, n_slots=16, seq_len=64))
