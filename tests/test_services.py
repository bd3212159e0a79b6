"""Real services: a Ray cluster started with `ray start --head` and a job submitted with
`ray job submit`; an S3-compatible server (moto_server) on loopback for s3:// paths."""

from __future__ import annotations

import json
import secrets
import subprocess

import pyarrow.parquet as pq
import pytest
import ray
import s3fs

from pipeline.job import run_job
from pipeline.verify import verify_output
from tests.pipeline_fixtures import job_config, make_input, tiny_checkpoint
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


SECRET = "fake-secret-key-for-tests-d41d8cd98f00b204"


def test_s3_input_and_output_against_moto(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    local = tmp_path / "in"
    make_input(local, n_shards=2, max_bytes=12_000, fmt="parquet")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with started([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, tmp_path / "moto.log"):
        so = {"endpoint_url": endpoint, "key": "testing", "secret": SECRET}
        fs = s3fs.S3FileSystem(**so)
        fs.mkdir("corpus")
        for p in sorted(local.iterdir()):
            fs.put_file(str(p), f"corpus/in/{p.name}")
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            cfg = job_config("s3://corpus/in", "s3://corpus/out", ckpt, storage_options=so)
            first = run_job(cfg)
            second = run_job(cfg)
        finally:
            ray.shutdown()
        assert first.shards_done == 2 and first.shards_failed == 0, first.failed
        assert second.shards_skipped == 2
        names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("corpus/out/shards"))
        assert names == ["part-00000.parquet", "part-00001.parquet"]
        rep = verify_output(cfg, sample=5)
        assert rep["ok"] and rep["checked_docs"] == 5
        # The secret never lands in outputs, and never in what the job printed.
        for path in fs.find("corpus/out"):
            assert SECRET.encode() not in fs.cat_file(path), path
        printed = capfd.readouterr()
        assert SECRET not in printed.out and SECRET not in printed.err
