"""The segment cache across runs: at the end of a run its hottest entries are written to
`<output>/_cache/<namespace>.pcw.zst`; a later run of the same compressor (same
namespace: weights, numerics, coder settings) loads them before its first shard task.
`cache.warm_from` points a run at another output's `_cache/` (the next slice of a
corpus, written elsewhere). The entries only save work: a hit gives the symbols coding
would give, so outputs are byte-identical warm or cold (tested)."""

from __future__ import annotations

import fsspec

from cache.persist import dump_entries, load_entries
from cache.sharded import ShardedCache

from ..config import JobConfig
from ..redact import redact
from ..store.files import write_bytes_atomic
from ..store.layout import OutputLayout, warm_cache_file


def load_warm(cfg: JobConfig, namespace: str, cache: ShardedCache, log=print) -> dict:
    url = warm_cache_file(cfg.cache.warm_from or OutputLayout(cfg.output).cache, namespace)
    try:
        with fsspec.open(url, "rb", **cfg.storage_options) as f:
            data = f.read()
        items = load_entries(data)
    except FileNotFoundError:
        return {"from": redact(url), "entries": 0}
    except Exception as e:  # noqa: BLE001 - damaged, or the store failed: entries only save work
        reason = redact(f"{type(e).__name__}: {e}")
        log(f"warning: {redact(url)}: {reason}; starting with an empty segment cache")
        return {"from": redact(url), "entries": 0, "error": reason}
    n = cache.load(items)
    log(f"segment cache: {n:,} entries ({len(data):,} bytes) from {redact(url)}")
    return {"from": redact(url), "entries": n, "bytes": len(data)}


def save_warm(cfg: JobConfig, namespace: str, cache: ShardedCache, log=print) -> dict:
    url = warm_cache_file(OutputLayout(cfg.output).cache, namespace)
    try:
        items = cache.hottest(cfg.cache.keep_bytes)
        data = dump_entries(items)
        write_bytes_atomic(url, data, cfg.storage_options)
    except Exception as e:  # noqa: BLE001 - the shards are committed; a lost cache only costs the next run work
        reason = redact(f"{type(e).__name__}: {e}")
        log(f"warning: could not keep the segment cache in {redact(url)}: {reason}")
        return {"to": redact(url), "entries": 0, "error": reason}
    return {"to": redact(url), "entries": len(items), "bytes": len(data)}
