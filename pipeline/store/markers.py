"""What an output directory already holds, from listings rather than probes.

`_done/<name>.json` and `_failed/<name>.json` are the source of truth for a shard's
state. Asking the store about each shard (exists, then read) costs one or two requests
per shard per pass; at corpus scale (tens of thousands of shards) and with a real object
store's latency that is minutes per pass. Here one paginated listing per marker folder
says which shards are done or failed (O(shards / page size) requests).

Marker contents, where needed (namespace check, totals, manifest), come from a ledger,
`_index/markers.json.zst`: the markers read so far, each with the tag (ETag or size and
modification time) its listing entry had then. A marker whose listing entry still
carries that tag is taken from the ledger; only markers written or rewritten since are
fetched, concurrently (fsspec's batched `cat`). The ledger is a cache, never the truth:
a lost, stale or corrupt ledger costs requests, not correctness.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime

import fsspec
import zstandard

from compressor_model.corpus import listing_tag

from .files import write_bytes_atomic
from .layout import Marker, OutputLayout


def _modified(info: dict) -> float | None:
    """A listing entry's modification time, in seconds since the epoch."""
    t = info.get("mtime") or info.get("LastModified") or info.get("updated") or info.get("created")
    if isinstance(t, datetime):
        return t.timestamp()
    return float(t) if isinstance(t, (int, float)) else None


class MarkerIndex:
    """Names of done and failed shards of one output, and their markers on demand."""

    def __init__(self, output: str, storage_options: dict):
        self.output, self.so, self.layout = output, storage_options, OutputLayout(output)
        self.fs, _ = fsspec.core.url_to_fs(output, **storage_options)
        listings = {kind: self._list(kind) for kind in Marker}
        self.tags: dict[Marker, dict[str, str]] = {k: {n: listing_tag(i) for n, i in v.items()} for k, v in listings.items()}
        self.modified: dict[Marker, dict[str, float | None]] = {k: {n: _modified(i) for n, i in v.items()}
                                                             for k, v in listings.items()}
        self.names: dict[Marker, set[str]] = {kind: set(t) for kind, t in self.tags.items()}
        self._read: dict[tuple[Marker, str], dict] = {}
        self.fetched = 0  # markers read one by one (not from the ledger) by this index
        self._load_ledger()

    def _path(self, url: str) -> str:
        return fsspec.core.url_to_fs(url, **self.so)[1]

    def _list(self, kind: Marker) -> dict[str, dict]:
        """name -> listing entry of each marker of this kind."""
        out = {}
        for p, info in self.fs.find(self._path(self.layout.marker_folder(kind)), detail=True).items():
            base = p.rsplit("/", 1)[-1]
            if base.endswith(".json") and not base.startswith("."):  # ".tmp-..." is a write in progress
                out[base[: -len(".json")]] = info
        return out

    def _load_ledger(self) -> None:
        try:
            raw = self.fs.cat_file(self._path(self.layout.ledger))
            ledger = json.loads(zstandard.ZstdDecompressor().decompress(raw))
        except FileNotFoundError:
            return
        except Exception:  # noqa: BLE001 - a damaged ledger is only a lost cache
            return
        for kind in Marker:
            for name, (tag, marker) in ledger.get(kind.value, {}).items():
                if self.tags[kind].get(name) == tag:
                    self._read[(kind, name)] = marker

    def save(self) -> None:
        """Write the ledger of every marker this index holds (if it fetched any)."""
        if not self.fetched:
            return
        ledger: dict = {kind.value: {} for kind in Marker}
        for (kind, name), marker in self._read.items():
            if name in self.tags[kind]:
                ledger[kind.value][name] = [self.tags[kind][name], marker]
        data = zstandard.ZstdCompressor(level=3).compress(json.dumps(ledger, separators=(",", ":")).encode())
        write_bytes_atomic(self.layout.ledger, data, self.so)
        self.fetched = 0

    @property
    def done(self) -> set[str]:
        return self.names[Marker.DONE]

    @property
    def failed(self) -> set[str]:
        """Failed and not done since (a rerun that succeeded leaves no _failed marker,
        but a listing taken mid-commit might see both)."""
        return self.names[Marker.FAILED] - self.names[Marker.DONE]

    def keep(self, earlier: MarkerIndex, changed: set[str]) -> None:
        """Take the markers an earlier index of this output read, except those of shards
        that have changed since (rerun in between) or whose listing entry changed."""
        for (kind, name), m in earlier._read.items():
            if name not in changed and earlier.tags[kind].get(name) == self.tags[kind].get(name):
                self._read[(kind, name)] = m

    def unread(self, kind: Marker, names) -> list[str]:
        """Those of `names` with a marker of this kind that neither the ledger nor an
        earlier read holds: what reading them would fetch."""
        return [n for n in names if (kind, n) not in self._read and n in self.names[kind]]

    def markers(self, kind: Marker, names) -> dict[str, dict]:
        """Contents of these markers, fetched together; names without one are left out."""
        want = [n for n in names if (kind, n) not in self._read and n in self.names[kind]]
        if want:
            paths = {self._path(self.layout.marker(kind, n)): n for n in want}
            for path, data in self.fs.cat(list(paths), on_error="return").items():
                if isinstance(data, bytes):
                    self._read[(kind, paths[path])] = json.loads(data)
                    self.fetched += 1
        return {n: self._read[(kind, n)] for n in names if (kind, n) in self._read}


class LedgerRefresher:
    """Keeps the ledger current while a run commits shards: every `every_s` a thread
    lists the markers again, reads the ones written since (concurrently) and saves the
    ledger, so that `status` during a long run finds them there instead of fetching
    them one by one."""

    def __init__(self, index: MarkerIndex, every_s: float):
        self.index, self.every_s = index, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxycomp-ledger", daemon=True)
        self.refreshes = 0

    def start(self) -> LedgerRefresher:
        if self.every_s > 0:
            self._thread.start()
        return self

    def refresh(self) -> None:
        fresh = MarkerIndex(self.index.output, self.index.so)
        fresh.keep(self.index, set())
        for kind in Marker:
            fresh.markers(kind, sorted(fresh.names[kind]))
        fresh.save()
        self.index = fresh
        self.refreshes += 1

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a cache: a failed refresh costs the next status requests
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
