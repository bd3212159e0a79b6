"""torch Dataset/DataLoader over proxycomp output, with resume state that checks itself.

Units (file, row group) are dealt to (rank, worker) slots, so ranks and workers never
share a document and an epoch covers every document once. Everything a slot does
depends only on (seed, slot), so resuming is replaying: the loader counts batches and
each worker skips what it had produced. The state carries a fingerprint of everything
the stream depends on; loading it into a loader whose stream would differ is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .config import DatasetConfig
from .source import list_units
from .stream import ProxyStream
from .vocab import Vocab

STATE_VERSION = 2


def _rank_and_world(cfg: DatasetConfig) -> tuple[int, int]:
    if (cfg.rank is None) != (cfg.world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if cfg.rank is not None:
        if not 0 <= cfg.rank < cfg.world_size:
            raise ValueError(f"rank {cfg.rank} is not in [0, {cfg.world_size})")
        return cfg.rank, cfg.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world > 1:
        # Without a process group every rank would read rank 0's share.
        raise RuntimeError(f"WORLD_SIZE={env_world} but torch.distributed has no process group: build the loader "
                           "after init_process_group, or pass rank and world_size in DatasetConfig")
    return 0, 1


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ProxyDataset(IterableDataset):
    """The sequences of this rank; DataLoader workers split them (see module docstring)."""

    def __init__(self, cfg: DatasetConfig, batch_size: int, num_workers: int = 0):
        super().__init__()
        if cfg.seq_len < 2 or batch_size < 1:
            raise ValueError("seq_len must be at least 2 and batch_size at least 1")
        self.cfg, self.batch_size, self.workers = cfg, batch_size, max(1, num_workers)
        self.rank, self.world_size = _rank_and_world(cfg)
        self.units, self.meta = list_units(cfg.urls, cfg.storage_options)
        self.vocab = Vocab(n_symbols=int(self.meta["n_symbols"]), layout=cfg.layout, n_special=cfg.n_special)
        if cfg.mix.draws_raw:
            bad = next((u for u in self.units if u.has_null_raw), None)
            if bad is not None:
                raise ValueError(f"{bad.url} row group {bad.row_group}: raw bytes were not stored "
                                 "(output_format.store_raw: false), but the mix draws raw views; "
                                 "train on compressed views only (mix r_start = r_end = 1.0) or rerun with store_raw")
        self.n_slots = self.world_size * self.workers
        self.resume_batches = 0
        self.limit = self._equal_limit() if cfg.epochs is not None else None

    def _stream(self, slot: int, worker: int, skip: int = 0, limit: int | None = None) -> ProxyStream:
        return ProxyStream(self.cfg, self.units, self.vocab, slot, self.n_slots, self.batch_size, self.workers,
                           worker, skip=skip, limit=limit)

    def _equal_limit(self) -> int:
        """Finite epochs: every slot stops after the same number of full batches, or DDP
        would hang on the rank that runs out first. Planning reads length columns only."""
        counts = [self._stream(s, s % self.workers).count() for s in range(self.n_slots)]
        limit = min(counts) // self.batch_size * self.batch_size
        if limit == 0:
            raise ValueError(f"{sum(counts)} sequences of {self.cfg.seq_len} tokens cannot give every one of "
                             f"{self.n_slots} rank x worker slots a batch of {self.batch_size}")
        self.dropped_sequences = sum(counts) - limit * self.n_slots
        return limit

    def __len__(self) -> int:
        if self.limit is None:
            raise TypeError("an endless stream (epochs: None) has no length")
        return self.limit * self.workers  # sequences of this rank

    def stream(self, worker: int) -> ProxyStream:
        done = self.resume_batches // self.workers + (1 if worker < self.resume_batches % self.workers else 0)
        return self._stream(self.rank * self.workers + worker, worker, skip=done * self.batch_size, limit=self.limit)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if workers != self.workers:
            raise RuntimeError(f"dataset made for {self.workers} workers runs in {workers}; use ProxyLoader")
        # DataLoader takes batches from its workers round robin starting at worker 0; after
        # n batches the next one was due from worker n % W, so rotate the roles.
        return iter(self.stream((worker + self.resume_batches) % workers))

    def fingerprint_parts(self) -> dict:
        cfg = self.cfg
        return {
            "files": {"row_groups": len(self.units), "files": len({u.url for u in self.units}),
                      "rows": sum(u.rows for u in self.units),
                      "digest": _digest([(u.url, u.row_group, u.rows) for u in self.units])},
            "namespace": self.meta.get("namespace"),
            "seq_len": cfg.seq_len, "seed": cfg.seed, "epochs": cfg.epochs, "layout": cfg.layout.value,
            "n_special": cfg.n_special, "mix": asdict(cfg.mix), "shuffle_sequences": cfg.shuffle_sequences,
            "batch_size": self.batch_size, "num_workers": self.workers, "world_size": self.world_size,
        }


class ProxyLoader:
    """DataLoader over ProxyDataset that counts the batches it hands out, so
    `state_dict()` / `load_state_dict()` resume exactly, mid-epoch included."""

    def __init__(self, cfg: DatasetConfig, batch_size: int, num_workers: int = 0, **loader_kwargs):
        self.dataset = ProxyDataset(cfg, batch_size, num_workers)
        self.batch_size, self.num_workers, self.kwargs = batch_size, num_workers, loader_kwargs
        self.batches = 0

    @property
    def vocab(self) -> Vocab:
        return self.dataset.vocab

    def __len__(self) -> int:
        """Batches per rank for finite epochs (the same on every rank)."""
        return len(self.dataset) // self.batch_size

    def __iter__(self):
        self.dataset.resume_batches = self.batches
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers, **self.kwargs)
        for batch in loader:
            self.batches += 1
            yield batch

    def state_dict(self) -> dict:
        parts = self.dataset.fingerprint_parts()
        return {"version": STATE_VERSION, "batches": self.batches, "rank": self.dataset.rank,
                "fingerprint": _digest(parts), "parts": parts}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"cannot resume: data state version {state.get('version')}, this loader writes {STATE_VERSION}")
        mine = self.dataset.fingerprint_parts()
        if state["fingerprint"] != _digest(mine):
            old = state.get("parts", {})
            diff = [f"{k}: {old.get(k)!r} -> {mine[k]!r}" for k in mine if old.get(k) != mine[k]]
            raise ValueError("cannot resume: the data stream would differ from the checkpoint's; changed: "
                             + "; ".join(diff or ["(unknown)"]))
        self.batches = int(state["batches"])
