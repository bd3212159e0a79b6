"""Training sequences from proxycomp output: what a PyTorch trainer imports.

    from pipeline.dataset import DatasetConfig, ProxyLoader
    loader = ProxyLoader(DatasetConfig(urls=["s3://bucket/out/shards/"], seq_len=2048), batch_size=8, num_workers=4)
    for step, batch in enumerate(loader):          # batch["tokens"], batch["doc_ids"]: [8, 2048]
        ...
    ckpt["data"] = loader.state_dict()             # resume later: loader.load_state_dict(...)

Each document is shown compressed with probability r, else raw (`pipeline.vocab`). r
follows a schedule (default: 0.4 -> 0.9 linearly over the first 10,000 steps, then 0.9);
during that warm-up some documents come as translation pairs (both views, random
order, one attention segment), with the pair probability calibrated so compressed
views stay a fraction r of all views (method.md). Samples are packed into `seq_len`
tokens; `doc_ids` numbers the attention segments of a sequence (-1 for padding), so a
trainer masks attention within segments (`attention_mask`, `cu_seqlens`).

Determinism: units (file, row group) are shuffled per epoch from the seed and dealt to
(rank, worker) slots round-robin, so ranks and workers never share a document and an
epoch covers every document once. Everything a slot does depends only on (seed, slot),
so resuming is replaying: the loader counts batches, and on resume each worker skips
the sequences it had produced, reading only the length columns to do so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .output import read_metadata
from .vocab import PAD, Vocab


@dataclass(frozen=True)
class MixConfig:
    r_start: float = 0.4
    r_end: float = 0.9
    warmup_steps: int = 10_000
    pairs_in_warmup: bool = True

    def r(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.r_end
        return self.r_start + (self.r_end - self.r_start) * step / self.warmup_steps


@dataclass(frozen=True)
class DatasetConfig:
    urls: tuple[str, ...] | list[str] = ()  # output Parquet files or directories of them
    seq_len: int = 2048
    seed: int = 0
    epochs: int | None = None  # None: cycle forever, a new shuffle every epoch
    n_special: int = 64
    mix: MixConfig = MixConfig()
    rank: int | None = None  # default: torch.distributed rank, else 0
    world_size: int | None = None
    storage_options: dict = field(default_factory=dict)


@dataclass
class Unit:
    url: str
    row_group: int
    rows: int


@dataclass
class Sample:
    """One attention segment's worth of views of one document, before packing."""

    unit: int
    row: int
    step: int
    views: tuple[str, ...]  # ("cmp",), ("raw",), ("raw", "cmp") or ("cmp", "raw")
    length: int


def list_units(cfg: DatasetConfig) -> tuple[list[Unit], dict]:
    """Row groups of every output file, in sorted order, plus the shared metadata."""
    files = []
    for url in cfg.urls:
        fs, path = fsspec.core.url_to_fs(url, **cfg.storage_options)
        proto = url.split("://", 1)[0] + "://" if "://" in url else ""
        found = [path] if fs.isfile(path) else sorted(p for p in fs.find(path) if p.endswith(".parquet"))
        files += [proto + p if proto else p for p in found]
    if not files:
        raise ValueError(f"no .parquet files under {list(cfg.urls)}")
    units, meta = [], None
    for url in sorted(files):
        with fsspec.open(url, "rb", **cfg.storage_options) as f:
            pf = pq.ParquetFile(f)
            m = read_metadata(pf)
            key = (m.get("compressor"), m.get("n_symbols"), m.get("namespace"))
            if meta is None:
                meta, first = m, key
            elif key != first:
                raise ValueError(f"{url}: made by {key[0]} ({key[2]}), unlike {first[0]} ({first[2]}) in the other files")
            units += [Unit(url, g, pf.metadata.row_group(g).num_rows) for g in range(pf.num_row_groups)]
    return units, meta


class ProxyStream:
    """The sequences of one (rank, worker) slot: a plain iterator, no torch needed."""

    def __init__(self, cfg: DatasetConfig, units: list[Unit], vocab: Vocab, slot: int, n_slots: int,
                 batch_size: int, workers: int, worker: int, skip: int = 0):
        self.cfg, self.units, self.vocab = cfg, units, vocab
        self.slot, self.n_slots = slot, n_slots
        self.batch_size, self.workers, self.worker = batch_size, workers, worker
        self.skip = skip  # sequences to produce without returning them (resume)
        self.record: list[Sample] | None = None  # set to a list to see every sample (tests, debugging)

    def step_of(self, j: int) -> int:
        """Training step of this worker's j-th sequence, given DataLoader's round robin."""
        return (j // self.batch_size) * self.workers + self.worker

    def _views(self, rng: np.random.Generator, step: int) -> tuple[str, ...]:
        mix = self.cfg.mix
        r = mix.r(step)
        if mix.pairs_in_warmup and step < mix.warmup_steps and 0.0 < r < 1.0:
            if r > 0.5:  # raw documents become pairs; compressed-only with q = 2 - 1/r
                single = "cmp" if rng.random() < 2.0 - 1.0 / r else None
            else:  # compressed documents become pairs; raw-only with 1 - q, q = r / (1 - r)
                single = "raw" if rng.random() >= r / (1.0 - r) else None
            if single:
                return (single,)
            return ("raw", "cmp") if rng.random() < 0.5 else ("cmp", "raw")
        return ("cmp",) if rng.random() < r else ("raw",)

    def rows(self):
        """(unit, row, rng, unit data) in this slot's order, epoch after epoch."""
        if len(self.units) < self.n_slots:
            raise ValueError(f"{len(self.units)} row groups cannot feed {self.n_slots} rank x worker slots: "
                             "use fewer DataLoader workers or write smaller row groups (output_format.row_group_docs)")
        epoch = 0
        while self.cfg.epochs is None or epoch < self.cfg.epochs:
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.units))
            rng = np.random.default_rng([self.cfg.seed, epoch, self.slot, 1])
            for u in order[self.slot :: self.n_slots]:
                data = _UnitData(self.units[u], self.vocab, self.cfg.storage_options)
                for row in np.random.default_rng([self.cfg.seed, epoch, int(u)]).permutation(self.units[u].rows):
                    yield int(u), int(row), rng, data
            epoch += 1

    def __iter__(self) -> Iterator[dict]:
        L = self.cfg.seq_len
        tokens = np.full(L, PAD, np.int64)
        docs = np.full(L, -1, np.int32)
        filled, j, seg = 0, 0, 0
        for u, row, rng, data in self.rows():
            step = self.step_of(j)
            views = self._views(rng, step)
            n = data.length(row, views)
            if self.record is not None:
                self.record.append(Sample(u, row, step, views, n))
            offset = 0
            while offset < n:
                take = min(n - offset, L - filled)
                if j >= self.skip:
                    tokens[filled : filled + take] = data.tokens(row, views)[offset : offset + take]
                    docs[filled : filled + take] = seg
                filled += take
                offset += take
                seg += 1
                if filled == L:
                    if j >= self.skip:
                        yield {"tokens": torch.from_numpy(tokens.copy()), "doc_ids": torch.from_numpy(docs.copy()),
                               "step": step}
                    j += 1
                    step = self.step_of(j)
                    filled, seg = 0, 0
                    tokens[:] = PAD
                    docs[:] = -1
        if filled and j >= self.skip:  # the last, padded sequence of a finite run
            yield {"tokens": torch.from_numpy(tokens.copy()), "doc_ids": torch.from_numpy(docs.copy()), "step": self.step_of(j)}


class _UnitData:
    """One row group: lengths always (cheap columns), tokens only when asked for."""

    def __init__(self, unit: Unit, vocab: Vocab, storage_options: dict):
        self.unit, self.vocab, self.so = unit, vocab, storage_options
        self._lengths = None
        self._table = None

    def _read(self, columns):
        with fsspec.open(self.unit.url, "rb", **self.so) as f:
            return pq.ParquetFile(f).read_row_group(self.unit.row_group, columns=columns)

    def length(self, row: int, views) -> int:
        if self._lengths is None:
            t = self._read(["n_bytes", "n_symbols"])
            self._lengths = (t.column("n_bytes").to_numpy(), t.column("n_symbols").to_numpy())
        nb, ns = self._lengths
        return sum(int(nb[row] if v == "raw" else ns[row]) + 2 for v in views)

    def tokens(self, row: int, views) -> np.ndarray:
        if self._table is None:
            self._table = self._read(["raw", "symbols"])
        parts = []
        for v in views:
            if v == "raw":
                raw = self._table.column("raw")[row].as_py()
                if raw is None:
                    raise ValueError(f"{self.unit.url}: raw bytes were not stored (output_format.store_raw: false)")
                parts.append(self.vocab.raw(raw))
            else:
                parts.append(self.vocab.compressed(self._table.column("symbols")[row].values.to_numpy()))
        return np.concatenate(parts)


class ProxyDataset(IterableDataset):
    """torch IterableDataset over proxycomp output; see the module docstring."""

    def __init__(self, cfg: DatasetConfig, batch_size: int):
        super().__init__()
        self.cfg, self.batch_size = cfg, batch_size
        self.units, self.meta = list_units(cfg)
        self.vocab = Vocab(n_symbols=int(self.meta.get("n_symbols", 1 << 16)), n_special=cfg.n_special)
        rank, world = cfg.rank, cfg.world_size
        if rank is None or world is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if dist else 0
            world = torch.distributed.get_world_size() if dist else 1
        self.rank, self.world_size = rank, world
        self.resume_batches = 0

    def stream(self, worker: int, workers: int) -> ProxyStream:
        done = self.resume_batches // workers + (1 if worker < self.resume_batches % workers else 0)
        return ProxyStream(self.cfg, self.units, self.vocab, self.rank * workers + worker, self.world_size * workers,
                           self.batch_size, workers, worker, skip=done * self.batch_size)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # DataLoader takes batches from its workers round robin starting at worker 0; after
        # n batches the next one was due from worker n % W, so rotate the roles.
        return iter(self.stream((worker + self.resume_batches) % workers, workers))


class ProxyLoader:
    """DataLoader over ProxyDataset that knows how many batches it has handed out, so
    `state_dict()` / `load_state_dict()` resume exactly mid-epoch."""

    def __init__(self, cfg: DatasetConfig, batch_size: int, num_workers: int = 0, **loader_kwargs):
        self.dataset = ProxyDataset(cfg, batch_size)
        self.batch_size, self.num_workers, self.kwargs = batch_size, num_workers, loader_kwargs
        self.batches = 0

    @property
    def vocab(self) -> Vocab:
        return self.dataset.vocab

    def __iter__(self):
        self.dataset.resume_batches = self.batches
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers, **self.kwargs)
        for batch in loader:
            self.batches += 1
            yield batch

    def state_dict(self) -> dict:
        return {"batches": self.batches, "seed": self.dataset.cfg.seed, "num_workers": self.num_workers,
                "batch_size": self.batch_size, "rank": self.dataset.rank, "world_size": self.dataset.world_size}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "num_workers", "batch_size", "world_size"):
            mine = self.state_dict()[k]
            if state[k] != mine:
                raise ValueError(f"cannot resume: {k} was {state[k]}, is now {mine}")
        self.batches = int(state["batches"])


def attention_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """[..., T] segment ids -> [..., T, T] bool: causal and within one segment."""
    same = doc_ids[..., :, None] == doc_ids[..., None, :]
    causal = torch.ones(doc_ids.shape[-1], doc_ids.shape[-1], dtype=torch.bool, device=doc_ids.device).tril()
    return same & causal & (doc_ids[..., :, None] >= 0)


def cu_seqlens(doc_ids: torch.Tensor) -> torch.Tensor:
    """[T] segment ids of one sequence -> int32 cumulative segment lengths (flash-attn style),
    padding counted as its own trailing segment."""
    change = torch.ones(doc_ids.shape[0] + 1, dtype=torch.bool)
    change[1:-1] = doc_ids[1:] != doc_ids[:-1]
    return torch.nonzero(change).flatten().to(torch.int32)


def labels(tokens: torch.Tensor, doc_ids: torch.Tensor, ignore: int = -100) -> torch.Tensor:
    """Next-token targets that never cross a segment boundary (ignore elsewhere)."""
    out = torch.full_like(tokens, ignore)
    same = (doc_ids[..., 1:] == doc_ids[..., :-1]) & (doc_ids[..., 1:] >= 0)
    out[..., :-1] = torch.where(same, tokens[..., 1:], torch.full_like(tokens[..., 1:], ignore))
    return out

