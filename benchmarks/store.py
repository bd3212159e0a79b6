"""Driver cost at corpus scale: `python -m benchmarks.store --shards 20000 --json`.

An S3-compatible server (moto_server, on 127.0.0.1: no network latency at all) holds N
input shards and N completion markers, as after a finished run. Timed, with the storage
requests each made (counted in the server's request log):

1. `proxycomp status` on an output no pass has indexed yet (every marker read once),
2. `proxycomp run` whose shards are all done (this pass writes the marker ledger),
3. `proxycomp status` again, and 4. the same run again (markers from the ledger).

Each pass is the real CLI in a process of its own (a run starts its local Ray cluster
and the model actor: `startup_s` in its summary). Needs moto[server] (the dev extra).
One JSON object out, machine included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

import s3fs

from compressor_model.config import EngineConfig, Precision, SegmentConfig, Thresholds
from compressor_model.corpus import list_shards
from compressor_model.engine import NeuralCompressor
from compressor_model.numerics import describe_machine
from pipeline.config import dump_config, load_config, settings_key

BUCKET = "corpus"
_REQUEST = re.compile(rb'"(GET|PUT|POST|HEAD|DELETE) ')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """moto_server on loopback in a process group of its own, stopped by that PID."""

    def __init__(self, log_path: str):
        self.port = _free_port()
        self.log_path = log_path
        exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        if not exe:
            raise SystemExit("moto_server not found: install the dev extra (moto[server])")
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        self.stop()
        raise SystemExit("moto_server did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> int:
        with open(self.log_path, "rb") as f:
            return len(_REQUEST.findall(f.read()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


def populate(fs: s3fs.S3FileSystem, n: int, comp: NeuralCompressor, endpoint: str, batch: int = 1000) -> None:
    """N one-document input shards and their _done markers, as a finished run leaves them:
    each marker with its input's listing tag (the fingerprint `status` and `run` compare)."""
    fs.mkdir(BUCKET)
    th = Thresholds(3.0, 1.5, 95.0, 1, 1, comp.fingerprint)
    fs.pipe_file(f"{BUCKET}/out/thresholds.json", json.dumps(asdict(th)).encode())
    cfg = load_config(None, [f"input=s3://{BUCKET}/in", f"output=s3://{BUCKET}/out", "engine.precision=fp32"])
    fs.pipe_file(f"{BUCKET}/out/config.yaml", dump_config(cfg).encode())
    settings = settings_key(cfg, comp.fingerprint)
    for start in range(0, n, batch):
        fs.pipe({f"{BUCKET}/in/part-{i:05d}.jsonl": json.dumps({"content": f"x = {i}\n"}).encode() + b"\n"
                 for i in range(start, min(n, start + batch))})
    tags = {u.rsplit("/", 1)[-1].split(".")[0]: tag
            for u, _, tag in list_shards(f"s3://{BUCKET}/in", {"endpoint_url": endpoint, "key": fs.key, "secret": fs.secret}, tags=True)}
    for start in range(0, n, batch):
        files = {}
        for i in range(start, min(n, start + batch)):
            name = f"part-{i:05d}"
            marker = {"name": name, "input": f"s3://{BUCKET}/in/{name}.jsonl", "rows": 1, "rejects": 0, "docs_in": 1,
                      "bytes_in": 6, "symbols_out": 2, "parquet": {"bytes": 1000, "sha256": "0" * 64},
                      "namespace": comp.namespace, "fingerprint": comp.fingerprint,
                      "settings": settings, "precision": "fp32", "input_fingerprint": tags[name]}
            files[f"{BUCKET}/out/_done/{name}.json"] = json.dumps(marker).encode()
        fs.pipe(files)


def timed(server: Moto, args: list[str], env: dict) -> dict:
    before = server.requests()
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    time.sleep(0.5)  # the server's log lines land after the responses
    if res.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    out = {"wall_s": round(wall, 2), "requests": server.requests() - before}
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if lines:
        d = json.loads(lines[-1])
        if args[0] == "status":
            out["counts"] = d["counts"]
        else:
            out.update(shards_skipped=d["shards_skipped"], shards_done=d["shards_done"], startup_s=round(d["startup_s"], 2))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=20_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = tempfile.mkdtemp(prefix="bench-store-")
    server = Moto(os.path.join(tmp, "moto.log"))
    try:
        key, secret = "bench", "bench-secret"
        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint, key=key, secret=secret)
        comp = NeuralCompressor.load(None, EngineConfig(precision=Precision.FP32), SegmentConfig())
        t = time.perf_counter()
        populate(fs, a.shards, comp, server.endpoint)
        populate_s = time.perf_counter() - t
        so = [f"--storage-option=endpoint_url={server.endpoint}", f"--storage-option=key={key}",
              f"--storage-option=secret={secret}"]
        env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
        status = ["status", "--output", f"s3://{BUCKET}/out", "--json", *so]
        run = ["run", "--input", f"s3://{BUCKET}/in", "--output", f"s3://{BUCKET}/out", "--no-progress",
               "--set", "engine.precision=fp32", "--json", *so]
        phases = {}
        for name, args in (("status_unindexed", status), ("run_all_done_unindexed", run),
                           ("status", status), ("run_all_done", run)):
            phases[name] = timed(server, args, env)
            phases[name]["requests_per_1000_shards"] = round(1000 * phases[name]["requests"] / a.shards, 1)
        out = {"bench": "store", "shards": a.shards, "store": "moto_server on 127.0.0.1", "populate_s": round(populate_s, 1),
               **phases, "machine": describe_machine(), "python": platform.python_version()}
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out) if a.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
