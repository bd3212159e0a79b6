"""What a person sees of a running job. On a terminal, progress bars (tqdm). Elsewhere
(`ray job logs`, a redirect, a CI log) bars would write a line every fraction of a
second for weeks; there a heartbeat writes one line every `run.log_every_s`, at the
first finished shard and at the end:

    [proxycomp] shards 1,204 done, 16 running, 3 failed, 18,777 left of 20,000 | 412.3 KB/s (last 60 s), 398.9 KB/s overall | ETA 13h 41m | model busy 93% | cache hits 31.2%
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from compressor_model.records import Counts


class Progress:
    """Counters the shard tasks bump after every batch, which attempt (a launch of a
    shard task) holds which shards in which worker process, and which attempt owns each
    group's commit; the driver polls them (a Ray actor in a job)."""

    def __init__(self, clock=time.monotonic):
        self.docs = self.bytes = 0
        self.working: dict[int, tuple[tuple[str, ...], int]] = {}  # attempt -> (shards, pid)
        self.last: dict[int, float] = {}  # when each attempt in flight last made progress
        self.owners: dict[str, int] = {}  # group -> the attempt allowed to commit it
        self.clock = clock

    def add(self, docs: int, nbytes: int, attempt: int | None = None) -> None:
        self.docs += docs
        self.bytes += nbytes
        if attempt in self.last:
            self.last[attempt] = self.clock()

    def started(self, attempt: int, shards: tuple[str, ...], pid: int) -> None:
        self.working[attempt] = (tuple(shards), pid)
        self.last[attempt] = self.clock()

    def finished(self, attempt: int) -> None:
        self.working.pop(attempt, None)
        self.last.pop(attempt, None)

    def stalled(self, timeout_s: float) -> list[int]:
        """Attempts in flight that made no progress for timeout_s."""
        now = self.clock()
        return sorted(a for a, t in self.last.items() if now - t >= timeout_s)

    def claim(self, group: str, attempt: int) -> bool:
        """Whether `attempt` may commit `group`: the first to ask may, and only it (a
        straggler and its duplicate make the same bytes; one of them writes them)."""
        return self.owners.setdefault(group, attempt) == attempt

    def release(self, group: str, attempt: int) -> None:
        """The owner failed: the group's next attempt may commit it."""
        if self.owners.get(group) == attempt:
            del self.owners[group]

    def get(self) -> tuple[int, int]:
        return self.docs, self.bytes

    def in_flight(self) -> dict[str, int]:
        """Shard -> the worker process of its latest attempt."""
        return {s: pid for shards, pid in self.working.values() for s in shards}


def _duration(s: float) -> str:
    s = int(s)
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _rate(bps: float) -> str:
    for unit, div in (("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if bps >= div:
            return f"{bps / div:,.1f} {unit}"
    return f"{bps:,.0f} B/s"


class Heartbeat:
    """Bars on a terminal (when run.progress), else log lines every `every_s` seconds
    (0: none). `clock` and `tty` are for tests."""

    def __init__(self, total_shards: int, model_actors: int, log, show_bars: bool, every_s: float,
                 tty: bool | None = None, clock=time.monotonic):
        self.total, self.actors, self.log, self.clock = total_shards, model_actors, log, clock
        self.bars = show_bars and (sys.stderr.isatty() if tty is None else tty)
        self.every = 0.0 if self.bars else every_s
        self.t0 = self.last_t = clock()
        self.bytes = self.last_bytes = 0
        self.done = self.failed = 0
        self.work = Counts()  # what the finished shards counted: model seconds, cache hits
        self.said_first = False
        self._bars = [
            tqdm(total=total_shards, desc="shards", unit="shard", file=sys.stderr, position=0),
            tqdm(desc="docs", unit="doc", file=sys.stderr, position=1),
            tqdm(desc="bytes", unit="B", unit_scale=True, file=sys.stderr, position=2),
        ] if self.bars else []
        self._docs = 0

    def progress(self, docs: int, nbytes: int, running: int) -> None:
        """The totals so far (from the Progress counter), and the shards in flight."""
        if self._bars:
            self._bars[1].update(docs - self._docs)
            self._bars[2].update(nbytes - self.bytes)
        self._docs, self.bytes = docs, nbytes
        if self.every and self.clock() - self.last_t >= self.every:
            self.beat(running)

    def shard(self, res, running: int) -> None:
        if res.status == "done":
            self.done += 1
            self.work.add(res)
        else:
            self.failed += 1
        if self._bars:
            self._bars[0].update(1)
        if self.every and not self.said_first:
            self.said_first = True
            self.beat(running)

    def beat(self, running: int) -> None:
        now = self.clock()
        span, total = now - self.last_t, now - self.t0
        recent = (self.bytes - self.last_bytes) / span if span > 0 else 0.0
        overall = self.bytes / total if total > 0 else 0.0
        left = self.total - self.done - self.failed
        finished = self.done + self.failed
        eta = _duration(total / finished * left) if finished and left else ("-" if left else "0s")
        busy = (self.work.seg_time + self.work.code_time) / (self.actors * total) if self.actors and total > 0 else None
        parts = [f"shards {self.done:,} done, {running:,} running, {self.failed:,} failed, {left:,} left of {self.total:,}",
                 f"{_rate(recent)} (last {_duration(span)}), {_rate(overall)} overall", f"ETA {eta}"]
        if busy is not None:
            parts.append(f"model busy {min(busy, 1.0):.0%}")
        if self.work.unique_segments:
            parts.append(f"cache hits {self.work.cache_hit_rate:.1%}")
        self.log(" | ".join(parts))
        self.last_t, self.last_bytes = now, self.bytes

    def close(self) -> None:
        for b in self._bars:
            b.close()
        if self.every:
            self.beat(0)
