"""Real services: a Ray cluster started with `ray start --head` and a job submitted with
`ray job submit`. (s3:// input and output on moto_server: tests/e2e/test_faults.py, with the
store failing mid-job.)"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from tests.pipeline_fixtures import make_input, tiny_checkpoint
from tests.procs import BIN, env, free_port, started

pytestmark = pytest.mark.slow

# The second node computes with other kernels, as a node of another CPU generation does.
OTHER_CPU = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}


def _wait_for_nodes(address: str, n: int, auth: dict, timeout: float = 120.0) -> None:
    probe = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(ray.cluster_resources().get('model_node', 0))"
    deadline = time.time() + timeout
    while time.time() < deadline:
        res = subprocess.run([str(BIN / "python"), "-c", probe], env=env(**auth), capture_output=True, text=True, timeout=120)
        if res.returncode == 0 and res.stdout.strip().splitlines()[-1:] == [f"{float(n)}"]:
            return
        time.sleep(1)
    raise TimeoutError(f"the cluster at {address} did not reach {n} model nodes: {res.stdout[-500:]} {res.stderr[-1500:]}")


def test_ray_start_head_and_job_submit_on_a_mixed_fleet(tmp_path):
    """Two nodes whose CPUs compute with different kernels, one model actor on each:
    the int8 job runs, its output verifies on a third setting (this process), and the
    same job in fp32 is refused (float results differ by kernel: they must not mix)."""
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    make_input(tmp_path / "in", n_shards=2, max_bytes=12_000)
    port, dash = free_port(), free_port()
    node = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block", '--resources={"model_node": 1}']
    head = [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", *node]
    worker = [str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", *node]
    # Ray enables token authentication for local clusters; give it a token of our own.
    # An in-process test before this one (init_local_ray) may have left single-machine
    # mode in this process's environment, which would refuse the second node.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}

    def submit(*extra: str) -> subprocess.CompletedProcess:
        job = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--",
               str(BIN / "proxycomp"), "run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
               "--checkpoint", ckpt, "--no-progress", "--json",
               "--set", "engine.lanes=64", "--set", "engine.group=32", "--set", "engine.compile=false", "--set", "segment.call_positions=512",
               "--set", "run.model_actors=2", "--set", "run.cpus_per_actor=1", "--set", 'run.model_resources={"model_node": 1}',
               "--set", "run.torch_threads=1", "--set", "run.batch_bytes=8000", "--set", "calibration.bytes=8000", *extra]
        return subprocess.run(job, env=env(**auth), capture_output=True, text=True, timeout=600)

    with started(head, dash, tmp_path / "ray-head.log", **auth), \
            started(worker, dash, tmp_path / "ray-worker.log", **auth, **OTHER_CPU):
        _wait_for_nodes(f"127.0.0.1:{port}", 2, auth)
        res = submit()
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        refused = submit("--set", "engine.precision=fp32", "--force")
    summary = json.loads([line for line in res.stdout.splitlines() if line.startswith('{"output"')][-1])
    assert summary["shards_done"] == 2 and summary["docs_in"] == summary["docs_out"] + summary["rejects"]
    assert len(summary["model_machines"]) == 2, summary["model_machines"]  # two kinds of CPU kernels
    for name in ("part-00000", "part-00001"):
        assert (tmp_path / "out" / "_done" / f"{name}.json").exists()
        assert pq.read_table(tmp_path / "out" / "shards" / f"{name}.parquet").num_rows > 0
    assert refused.returncode != 0 and "different numerics" in refused.stdout + refused.stderr
    check = subprocess.run([str(BIN / "proxycomp"), "verify", "--output", str(tmp_path / "out"), "--json"],
                           env=env(), capture_output=True, text=True, timeout=600)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["checked_docs"] > 0
