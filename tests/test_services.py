"""Real services: a Ray cluster started with `ray start --head` and a job submitted with
`ray job submit`. (s3:// input and output on moto_server: tests/test_faults.py, with the
store failing mid-job.)"""

from __future__ import annotations

import json
import secrets
import subprocess

import pyarrow.parquet as pq
import pytest

from tests.pipeline_fixtures import make_input, tiny_checkpoint
from tests.procs import BIN, env, free_port, started

pytestmark = pytest.mark.slow


def test_ray_start_head_and_job_submit(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    make_input(tmp_path / "in", n_shards=2, max_bytes=12_000)
    port, dash = free_port(), free_port()
    head = [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            "--disable-usage-stats"]
    # Ray enables token authentication for local clusters; give it a token of our own.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    with started(head, dash, tmp_path / "ray-head.log", **auth):
        job = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
               str(BIN / "proxycomp"), "run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
               "--checkpoint", ckpt, "--no-progress", "--json",
               "--set", "engine.lanes=64", "--set", "engine.group=32", "--set", "segment.call_positions=512",
               "--set", "run.torch_threads=1", "--set", "run.batch_bytes=8000", "--set", "run.calibration_bytes=8000"]
        res = subprocess.run(job, env=env(**auth), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads([line for line in res.stdout.splitlines() if line.startswith('{"output"')][-1])
    assert summary["shards_done"] == 2 and summary["docs_in"] == summary["docs_out"] + summary["rejects"]
    for name in ("part-00000", "part-00001"):
        assert (tmp_path / "out" / "_done" / f"{name}.json").exists()
        assert pq.read_table(tmp_path / "out" / "shards" / f"{name}.parquet").num_rows > 0
