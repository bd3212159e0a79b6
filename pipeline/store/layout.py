"""Where everything lives under an output URL: the one place that knows (docs/format.md).

    config.yaml                 resolved job config of the latest run that wrote shards (secrets masked)
    thresholds.json             segmentation thresholds used by every shard, and their
                                sample (bytes, documents, shards, seconds)
    manifest.json               per-shard status, rows, checksums, stats (rewritten by run)
    shards/<name>.parquet       one per input shard
    _rejects/<name>.jsonl       documents that could not be compressed, with reasons
    _stats/<name>.json          per-shard stats (cache hits and timings live here, not
                                in the Parquet, so the Parquet stays byte-identical)
    _done/<name>.json           completion marker: written last, names the checksum
    _failed/<name>.json         why a shard failed (removed once it succeeds)
    _tmp/                       Parquet files being written (local outputs); cleared by the next run
    _driver.json                the run writing the output now, renewed while it runs (store.lease)
    _runs/<time>-<run>.json     each run's summary (rates, cache, model busy fraction), for reports
    _runs/<time>-<run>.config.yaml  ... and the resolved config it ran with
    _index/markers.json.zst     the markers read so far, by listing tag (store.markers; a cache)
    _cache/<namespace>.pcw.zst  the segment cache's hottest entries, for the next run (job.warm)

A shard counts as done only when its marker exists; the Parquet and rejects files are
committed before the marker, each atomically, so no reader ever sees a partial file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Marker(enum.Enum):
    """The two markers a shard can have; the value is their folder."""

    DONE = "_done"
    FAILED = "_failed"


def join(base: str, *parts: str) -> str:
    """A URL under `base` (fsspec URLs use "/" whatever the local OS)."""
    return "/".join([base.rstrip("/"), *parts])


@dataclass(frozen=True)
class OutputLayout:
    root: str

    def _at(self, *parts: str) -> str:
        return join(self.root, *parts)

    # per shard
    def shard(self, name: str) -> str:
        return self._at("shards", f"{name}.parquet")

    def rejects(self, name: str) -> str:
        return self._at("_rejects", f"{name}.jsonl")

    def stats(self, name: str) -> str:
        return self._at("_stats", f"{name}.json")

    def marker(self, kind: Marker, name: str) -> str:
        return self._at(kind.value, f"{name}.json")

    def marker_folder(self, kind: Marker) -> str:
        return self._at(kind.value)

    # per output
    @property
    def shards(self) -> str:
        return self._at("shards")

    @property
    def config(self) -> str:
        return self._at("config.yaml")

    @property
    def thresholds(self) -> str:
        return self._at("thresholds.json")

    @property
    def manifest(self) -> str:
        return self._at("manifest.json")

    @property
    def tmp(self) -> str:
        return self._at("_tmp")

    @property
    def lease(self) -> str:
        return self._at("_driver.json")

    @property
    def ledger(self) -> str:
        return self._at("_index", "markers.json.zst")

    @property
    def cache(self) -> str:
        return self._at("_cache")

    @property
    def runs(self) -> str:
        return self._at("_runs")

    def run_summary(self, stamp: str, run_id: str) -> str:
        return self._at("_runs", f"{stamp}-{run_id}.json")

    def run_config(self, stamp: str, run_id: str) -> str:
        return self._at("_runs", f"{stamp}-{run_id}.config.yaml")


def warm_cache_file(folder: str, namespace: str) -> str:
    """A kept segment cache in `folder` (an output's _cache, or cache.warm_from)."""
    return join(folder, f"{namespace}.pcw.zst")
