"""Starting and stopping the real servers the tests need, by the PIDs we started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"  # as if the venv were activated
    e.update(RAY_USAGE_STATS_ENABLED="0", AWS_EC2_METADATA_DISABLED="true", **extra)
    return e


@contextmanager
def started(cmd: list[str], port: int, log: Path, **env_extra):
    """Run cmd in its own session; stop exactly that process group afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env(**env_extra), start_new_session=True)
    try:
        wait_port(port, proc=proc)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the process group we started, SIGKILL after `grace` seconds (a blocking
    `ray start --head` takes ~30 s to wind its children down gracefully)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # children that outlived the leader (Ray's raylet, GCS) are in the same group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
