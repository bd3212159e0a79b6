"""What a run reports to Ray's metrics (the dashboard, and the Prometheus endpoint each
node's metrics agent serves): an operator watches a long run, and alerts on it
(deploy/prometheus-alerts.yaml), without reading the job log.

Ray exports them with a `ray_` prefix, counters with `_total`
(`ray_proxycomp_bytes_in_total`). Every series carries the run's id and its output
(redacted), so concurrent runs are told apart. The driver records the job's counters and
gauges; each model actor records its own busy fraction.
"""

from __future__ import annotations

import time
from collections import deque

from ray.util.metrics import Counter, Gauge

from compressor_model.records import Counts

from ..redact import redact

TAGS = ("run", "output")


class JobMetrics:
    """The driver's metrics of one run."""

    def __init__(self, run_id: str, output: str, window_s: float = 60.0):
        tags = {"run": run_id, "output": redact(output)}

        def counter(name: str, what: str) -> Counter:
            c = Counter(f"proxycomp_{name}", what, tag_keys=TAGS)
            c.set_default_tags(tags)
            return c

        def gauge(name: str, what: str) -> Gauge:
            g = Gauge(f"proxycomp_{name}", what, tag_keys=TAGS)
            g.set_default_tags(tags)
            return g

        self.bytes_in = counter("bytes_in", "document bytes read (as they are compressed)")
        self.docs = counter("docs_compressed", "documents compressed so far (documents in = these + rejects)")
        self.symbols_out = counter("symbols_out", "symbols written, counted per committed shard")
        self.rejects = counter("rejects", "documents rejected (in _rejects/), per committed shard")
        self.shards_done = counter("shards_done", "shards committed")
        self.shards_failed = counter("shards_failed", "shards that failed for good (in _failed/)")
        self.bytes_per_s = gauge("bytes_per_s", "document bytes per second over the last minute")
        self.cache_hit_rate = gauge("cache_hit_rate", "share of distinct segments found in the segment cache")
        self.shards_remaining = gauge("shards_remaining", "shards of this run not yet done or failed")
        self._window: deque[tuple[float, int]] = deque()
        self._window_s = window_s
        self._seen = (0, 0)
        self._cache = Counts()
        self._remaining = 0

    def start(self, shards: int) -> None:
        self.shards_remaining.set(shards)
        self._remaining = shards

    def progress(self, docs: int, nbytes: int) -> None:
        """Totals so far from the shard tasks' progress counter."""
        d, b = docs - self._seen[0], nbytes - self._seen[1]
        if d > 0:
            self.docs.inc(d)
        if b > 0:
            self.bytes_in.inc(b)
        self._seen = (docs, nbytes)
        now = time.monotonic()
        self._window.append((now, nbytes))
        while len(self._window) > 2 and now - self._window[0][0] > self._window_s:
            self._window.popleft()
        (t0, b0), (t1, b1) = self._window[0], self._window[-1]
        self.bytes_per_s.set((b1 - b0) / (t1 - t0) if t1 > t0 else 0.0)

    def shard(self, res) -> None:
        """A shard's final result (pipeline.shard.ShardResult)."""
        if res.status == "done":
            self.shards_done.inc()
            if res.symbols_out:
                self.symbols_out.inc(res.symbols_out)
            if res.rejects:
                self.rejects.inc(res.rejects)
            self._cache.cache_hits += res.cache_hits
            self._cache.unique_segments += res.unique_segments
            self.cache_hit_rate.set(self._cache.cache_hit_rate)
        else:
            self.shards_failed.inc()
        self._remaining -= 1
        self.shards_remaining.set(self._remaining)
