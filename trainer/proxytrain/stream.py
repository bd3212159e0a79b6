"""The sequences of one (rank, worker) slot, as a plain iterator (no DataLoader needed).

Three steps, each deterministic in (seed, slot):
  1. rows: row groups shuffled per epoch and dealt to slots round robin; rows shuffled
     within a row group; each row's views drawn from the mixing schedule.
  2. plan: samples packed into seq_len pieces using the length columns only; a sample
     cut at a sequence end continues as a new attention segment of the next sequence.
  3. shuffle: a buffer of planned sequences, so that one long document does not fill
     consecutive batches; tokens are built only for sequences that leave it.
Each sample's tokens are built once however many sequences it spans (linear in its
length) and dropped when its last piece has left. Resuming replays steps 1-3 on lengths
alone and builds nothing for the sequences it skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import DatasetConfig
from .source import RowGroup, Unit
from .vocab import View, Vocab


@dataclass
class Sample:
    """One attention frame's worth of views of one document (recorded for tests/debugging)."""

    unit: int
    row: int
    step: int
    views: tuple[View, ...]
    length: int


class _Live:
    """A sample with pieces still waiting in the shuffle buffer."""

    __slots__ = ("data", "row", "views", "pending", "tokens")

    def __init__(self, data: RowGroup, row: int, views):
        self.data, self.row, self.views = data, row, views
        self.pending, self.tokens = 0, None


class ProxyStream:
    def __init__(self, cfg: DatasetConfig, units: list[Unit], vocab: Vocab, slot: int, n_slots: int,
                 batch_size: int, workers: int, worker: int, skip: int = 0, limit: int | None = None):
        self.cfg, self.units, self.vocab = cfg, units, vocab
        self.slot, self.n_slots = slot, n_slots
        self.batch_size, self.workers, self.worker = batch_size, workers, worker
        self.skip = skip  # sequences to replay without building them (resume)
        self.limit = limit  # sequences in all (finite epochs: the same on every slot)
        self.record: list[Sample] | None = None  # set to a list to see every sample

    def step_of(self, j: int) -> int:
        """Training step of this worker's j-th sequence, given DataLoader's round robin."""
        return (j // self.batch_size) * self.workers + self.worker

    def _views(self, rng: np.random.Generator, step: int) -> tuple[View, ...]:
        mix = self.cfg.mix
        r = mix.r(step)
        if mix.pairs_in_warmup and step < mix.warmup_steps and 0.0 < r < 1.0:
            # Pairs carry one view of each kind, so singles are drawn with q such that
            # compressed views stay a fraction r of all views.
            if r > 0.5:  # raw documents become pairs; compressed-only with q = 2 - 1/r
                single = View.CMP if rng.random() < 2.0 - 1.0 / r else None
            else:  # compressed documents become pairs; raw-only with 1 - q, q = r / (1 - r)
                single = View.RAW if rng.random() >= r / (1.0 - r) else None
            if single:
                return (single,)
            return (View.RAW, View.CMP) if rng.random() < 0.5 else (View.CMP, View.RAW)
        return (View.CMP,) if rng.random() < r else (View.RAW,)

    def rows(self):
        """(unit, row, rng, row group) in this slot's order, epoch after epoch."""
        if len(self.units) < self.n_slots:
            raise ValueError(f"{len(self.units)} row groups cannot feed {self.n_slots} rank x worker slots: "
                             "use fewer DataLoader workers or write smaller row groups (output_format.row_group_docs)")
        seed, so = self.cfg.seed, self.cfg.storage_options
        epoch = 0
        while self.cfg.epochs is None or epoch < self.cfg.epochs:
            order = np.random.default_rng([seed, epoch]).permutation(len(self.units))
            rng = np.random.default_rng([seed, epoch, self.slot, 1])
            for u in order[self.slot :: self.n_slots]:
                data = RowGroup(self.units[u], so)
                for row in np.random.default_rng([seed, epoch, int(u)]).permutation(self.units[u].rows):
                    yield int(u), int(row), rng, data
            epoch += 1

    def plan(self) -> Iterator[list[tuple[_Live, int, int]]]:
        """Sequences as lists of (sample, start, stop) pieces, from lengths alone."""
        L = self.cfg.seq_len
        pieces, filled, j = [], 0, 0
        for u, row, rng, data in self.rows():
            views = self._views(rng, self.step_of(j))
            nb, ns = data.lengths()
            n = self.vocab.sample_length(views, int(nb[row]), int(ns[row]))
            if self.record is not None:
                self.record.append(Sample(u, row, self.step_of(j), views, n))
            live = _Live(data, row, views)
            start = 0
            while start < n:
                take = min(n - start, L - filled)
                pieces.append((live, start, start + take))
                live.pending += 1
                start += take
                filled += take
                if filled == L:
                    yield pieces
                    pieces, filled, j = [], 0, j + 1
        if pieces:  # the last, padded sequence of a finite run
            yield pieces

    def count(self) -> int:
        """Sequences a finite run plans for this slot (reads length columns only)."""
        if self.cfg.epochs is None:
            raise ValueError("an endless stream (epochs: None) has no count")
        return sum(1 for _ in self.plan())

    def _shuffled(self):
        n = self.cfg.shuffle_sequences
        if n <= 1:
            yield from self.plan()
            return
        rng = np.random.default_rng([self.cfg.seed, self.slot, 2])
        buffer = []
        for seq in self.plan():
            if len(buffer) < n:
                buffer.append(seq)
                continue
            i = int(rng.integers(n))
            buffer[i], seq = seq, buffer[i]
            yield seq
        for i in rng.permutation(len(buffer)):
            yield buffer[i]

    def _build(self, pieces) -> dict:
        L, vocab = self.cfg.seq_len, self.vocab
        tokens = np.full(L, vocab.pad, np.int64)
        docs = np.full(L, -1, np.int32)
        pos = np.zeros(L, np.int64)
        at = 0
        for k, (live, a, b) in enumerate(pieces):
            if live.tokens is None:
                raw, symbols = live.data.row(live.row, View.RAW in live.views)
                live.tokens = vocab.sample(live.views, raw, symbols)
            tokens[at : at + b - a] = live.tokens[a:b]
            docs[at : at + b - a] = k
            pos[at : at + b - a] = np.arange(b - a)
            at += b - a
        self._release(pieces)
        return {"tokens": torch.from_numpy(tokens), "doc_ids": torch.from_numpy(docs),
                "position_ids": torch.from_numpy(pos)}

    @staticmethod
    def _release(pieces) -> None:
        for live, _, _ in pieces:
            live.pending -= 1
            if not live.pending:
                live.tokens = None

    def __iter__(self) -> Iterator[dict]:
        for j, pieces in enumerate(self._shuffled()):
            if self.limit is not None and j >= self.limit:
                return
            if j < self.skip:
                self._release(pieces)
                continue
            out = self._build(pieces)
            out["step"] = self.step_of(j)
            yield out
