"""What an output directory already holds, from listings rather than probes.

`_done/<name>.json` and `_failed/<name>.json` are the source of truth for a shard's
state. Asking the store about each shard (exists, then read) costs one or two requests
per shard per pass; at corpus scale (tens of thousands of shards) and with a real object
store's latency that is minutes per pass. Here one paginated listing per marker folder
says which shards are done or failed (O(shards / page size) requests), and marker
contents, where needed, are fetched concurrently (fsspec's batched `cat`; an object
store serves them in parallel) and kept, so one pass reads each marker once.
"""

from __future__ import annotations

import json

import fsspec

from .output import join

KINDS = ("_done", "_failed")


class MarkerIndex:
    """Names of done and failed shards of one output, and their markers on demand."""

    def __init__(self, output: str, storage_options: dict):
        self.output, self.so = output, storage_options
        self.fs, _ = fsspec.core.url_to_fs(output, **storage_options)
        self.names: dict[str, set[str]] = {kind: self._list(kind) for kind in KINDS}
        self._read: dict[tuple[str, str], dict] = {}

    def _list(self, kind: str) -> set[str]:
        _, path = fsspec.core.url_to_fs(join(self.output, kind), **self.so)
        names = set()
        for p in self.fs.find(path):
            base = p.rsplit("/", 1)[-1]
            if base.endswith(".json") and not base.startswith("."):  # ".tmp-..." is a write in progress
                names.add(base[: -len(".json")])
        return names

    @property
    def done(self) -> set[str]:
        return self.names["_done"]

    @property
    def failed(self) -> set[str]:
        """Failed and not done since (a rerun that succeeded leaves no _failed marker,
        but a listing taken mid-commit might see both)."""
        return self.names["_failed"] - self.names["_done"]

    def keep(self, earlier: MarkerIndex, changed: set[str]) -> None:
        """Take the markers an earlier index of this output read, except those of shards
        that have changed since (rerun in between)."""
        self._read.update({key: m for key, m in earlier._read.items() if key[1] not in changed})

    def markers(self, kind: str, names) -> dict[str, dict]:
        """Contents of these markers, fetched together; names without one are left out."""
        want = [n for n in names if (kind, n) not in self._read and n in self.names[kind]]
        if want:
            paths = {fsspec.core.url_to_fs(join(self.output, kind, f"{n}.json"), **self.so)[1]: n for n in want}
            for path, data in self.fs.cat(list(paths), on_error="return").items():
                if isinstance(data, bytes):
                    self._read[(kind, paths[path])] = json.loads(data)
        return {n: self._read[(kind, n)] for n in names if (kind, n) in self._read}
