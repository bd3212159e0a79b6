"""The loader: determinism, exact resume that checks itself, ranks, finite epochs."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from proxytrain import DatasetConfig, Layout, MixConfig, ProxyDataset, ProxyLoader


def test_deterministic_for_a_seed(out_dir):
    def first(seed):
        cfg = DatasetConfig(urls=[out_dir], seq_len=64, seed=seed, shuffle_sequences=16)
        return [b["tokens"] for _, b in zip(range(3), ProxyLoader(cfg, batch_size=2))]

    a, b, c = first(1), first(1), first(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_with_the_identical_next_batch(out_dir, workers):
    cfg = DatasetConfig(urls=[out_dir], seq_len=96, seed=3, shuffle_sequences=8, mix=MixConfig(warmup_steps=6))
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
        for key in ("tokens", "doc_ids", "position_ids", "step"):
            assert torch.equal(e[key], g[key]), key


def test_resume_refuses_a_different_stream(make_output, tmp_path):
    root = tmp_path / "out"
    make_output(root, files=2, groups=2, docs_per_group=10)
    cfg = DatasetConfig(urls=[str(root)], seq_len=64)
    state = ProxyLoader(cfg, batch_size=2).state_dict()
    changes = {
        "seq_len": (DatasetConfig(urls=[str(root)], seq_len=128), 2),
        "mix": (DatasetConfig(urls=[str(root)], seq_len=64, mix=MixConfig(r_end=0.5)), 2),
        "layout": (DatasetConfig(urls=[str(root)], seq_len=64, layout=Layout.PROXYCOMP_V1), 2),
        "epochs": (DatasetConfig(urls=[str(root)], seq_len=64, epochs=1), 2),
        "batch_size": (cfg, 3),
    }
    for name, (other, batch) in changes.items():
        with pytest.raises(ValueError, match=f"cannot resume.*{name}"):
            ProxyLoader(other, batch_size=batch).load_state_dict(state)
    make_output(tmp_path / "more", files=1, groups=1, docs_per_group=5, seed=9)  # a shard finished since
    (tmp_path / "more" / "part-00000.parquet").rename(root / "part-00009.parquet")
    with pytest.raises(ValueError, match="cannot resume.*files.*'files': 2.*'files': 3"):
        ProxyLoader(cfg, batch_size=2).load_state_dict(state)
    ProxyLoader(DatasetConfig(urls=[str(root / "part-00000.parquet"), str(root / "part-00001.parquet")], seq_len=64),
                batch_size=2).load_state_dict(state)  # the same files named one by one: same stream


def test_world_size_without_a_process_group_is_an_error(out_dir, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(RuntimeError, match="WORLD_SIZE=4 but torch.distributed has no process group"):
        ProxyLoader(DatasetConfig(urls=[out_dir]), batch_size=2)
    ds = ProxyDataset(DatasetConfig(urls=[out_dir], rank=3, world_size=4), 2)  # explicit ranks are fine
    assert (ds.rank, ds.world_size) == (3, 4)
    with pytest.raises(ValueError, match="rank 4 is not in"):
        ProxyDataset(DatasetConfig(urls=[out_dir], rank=4, world_size=4), 2)


@pytest.mark.parametrize("workers", [0, 2])
def test_finite_epochs_give_every_rank_the_same_number_of_batches(make_output, tmp_path, workers):
    make_output(tmp_path, files=3, groups=3, docs_per_group=15)  # row groups of unequal token counts
    counts, docs = [], []
    for rank in range(3):
        cfg = DatasetConfig(urls=[str(tmp_path)], seq_len=128, epochs=1, rank=rank, world_size=3,
                            mix=MixConfig(r_start=0.5, r_end=0.5))
        loader = ProxyLoader(cfg, batch_size=2, num_workers=workers)
        batches = list(loader)
        counts.append(len(batches))
        assert len(batches) == len(loader)
        assert all(b["tokens"].shape == (2, 128) for b in batches)
        docs.append(loader.dataset.dropped_sequences)
    assert len(set(counts)) == 1 and counts[0] > 0, counts
    assert len(set(docs)) == 1  # every rank computes the same plan


def test_store_raw_false_is_caught_before_the_first_batch(make_output, tmp_path):
    make_output(tmp_path, files=1, groups=2, docs_per_group=5, store_raw=False)
    with pytest.raises(ValueError, match=r"part-00000.parquet row group 0: raw bytes were not stored"):
        ProxyLoader(DatasetConfig(urls=[str(tmp_path)], seq_len=64), batch_size=2)
    only_cmp = DatasetConfig(urls=[str(tmp_path)], seq_len=64, mix=MixConfig(r_start=1.0, r_end=1.0))
    batch = next(iter(ProxyLoader(only_cmp, batch_size=2)))
    assert (batch["tokens"] == 14).any() and not (batch["tokens"] == 12).any()


def test_output_without_proxycomp_metadata_is_refused(make_output, tmp_path):
    make_output(tmp_path, files=1, groups=1, docs_per_group=3, meta={"compressor": "neural", "namespace": "x"})
    with pytest.raises(ValueError, match="lacks proxycomp.n_symbols"):
        ProxyLoader(DatasetConfig(urls=[str(tmp_path)]), batch_size=1)


def test_mixed_outputs_are_refused(make_output, tmp_path):
    make_output(tmp_path / "a", files=1, groups=1, docs_per_group=3)
    make_output(tmp_path / "b", files=1, groups=1, docs_per_group=3,
                meta={"compressor": "gzip", "namespace": "g", "n_symbols": 256})
    with pytest.raises(ValueError, match="made by gzip"):
        ProxyLoader(DatasetConfig(urls=[str(tmp_path / "a"), str(tmp_path / "b")]), batch_size=1)
    assert pq.ParquetFile(tmp_path / "b" / "part-00000.parquet").metadata.num_rows == 3
