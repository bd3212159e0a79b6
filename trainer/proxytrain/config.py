"""The loader's configuration: one frozen dataclass, nested mix schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

from .vocab import Layout


@dataclass(frozen=True)
class MixConfig:
    """Share r of compressed views: r_start -> r_end linearly over warmup_steps, then
    r_end; during warm-up some documents come as translation pairs (method.md)."""

    r_start: float = 0.4
    r_end: float = 0.9
    warmup_steps: int = 10_000
    pairs_in_warmup: bool = True

    def r(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.r_end
        return self.r_start + (self.r_end - self.r_start) * step / self.warmup_steps

    @property
    def draws_raw(self) -> bool:
        return min(self.r_start, self.r_end) < 1.0  # pairs, too, happen only where r < 1


@dataclass(frozen=True)
class DatasetConfig:
    urls: tuple[str, ...] | list[str] = ()  # output Parquet files or directories of them
    seq_len: int = 2048
    seed: int = 0
    epochs: int | None = None  # None: cycle forever, a new shuffle every epoch
    layout: Layout = Layout.EVABYTE
    n_special: int = 64
    mix: MixConfig = MixConfig()
    shuffle_sequences: int = 1024  # per worker; 0 or 1 keeps packing order
    rank: int | None = None  # default: torch.distributed's rank, else 0
    world_size: int | None = None
    storage_options: dict = field(default_factory=dict)
