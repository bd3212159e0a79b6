"""One driver per output: `_driver.json` names the run that is writing the output, and
that run renews it while it runs. A second driver (a manual `--shards` rerun while the
main job runs, a resubmission that came too early) is refused with the holder's name,
rather than clearing the first's temporary files and racing its manifest.

A lease is free when it is missing, released (a run that ends removes it), not renewed
for `STALE_S` (its driver is gone), or held by a process of this machine that no longer
exists (a driver killed here is taken over at once)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

import fsspec

from ..errors import JobError
from ..redact import redact
from .files import remove, write_json_atomic
from .layout import OutputLayout

RENEW_S = 30.0
STALE_S = 120.0


@dataclass
class Lease:
    run_id: str
    host: str
    pid: int
    started: float
    renewed: float

    def alive_here(self) -> bool | None:
        """Whether the holder still runs, where this machine can tell (None: elsewhere)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_lease(output: str, storage_options: dict) -> Lease | None:
    url = OutputLayout(output).lease
    try:
        with fsspec.open(url, "rb", **storage_options) as f:
            return Lease(**json.loads(f.read()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        return None  # damaged: nobody can be said to hold it


class LeaseKeeper:
    """Holds the output's lease for one run: taken at start, renewed by a thread,
    released at the end (with `with`)."""

    def __init__(self, output: str, storage_options: dict, run_id: str, clock=time.time):
        self.url, self.so, self.clock = OutputLayout(output).lease, storage_options, clock
        self.output = output
        now = clock()
        self.lease = Lease(run_id, socket.gethostname(), os.getpid(), now, now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        held = read_lease(self.output, self.so)
        if held is not None and held.run_id != self.lease.run_id:
            age = self.clock() - held.renewed
            alive = held.alive_here()
            if alive is not False and age < STALE_S:
                raise JobError(
                    f"another driver is writing {redact(self.output)}: run {held.run_id} on {held.host} (pid "
                    f"{held.pid}), started {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(held.started))}, last seen "
                    f"{age:.0f} s ago. Wait for it to finish (its shards then count as done here too), or stop it; "
                    f"a driver that is gone frees the output {STALE_S:.0f} s after it was last seen")
        write_json_atomic(self.url, asdict(self.lease), self.so)
        self._thread = threading.Thread(target=self._renew, name="proxycomp-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            self.lease.renewed = self.clock()
            try:
                write_json_atomic(self.url, asdict(self.lease), self.so)
            except Exception:  # noqa: BLE001 - a store hiccup: the next renewal tries again
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        held = read_lease(self.output, self.so)
        if held is not None and held.run_id == self.lease.run_id:
            remove(self.url, self.so)

    def __enter__(self) -> LeaseKeeper:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
