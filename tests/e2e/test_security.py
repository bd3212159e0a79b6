"""Security defaults: loopback-only listeners, checkpoints that cannot run code, and
credentials that never reach logs, outputs or error messages."""

from __future__ import annotations

import json
import pickle
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pipeline.cli import main as cli
from pipeline.config import JobConfig
from tests.pipeline_fixtures import make_input, tiny_checkpoint
from tests.procs import env

pytestmark = pytest.mark.slow

PROBE = textwrap.dedent('''
    import json, os, subprocess, sys
    from pipeline.config import load_config
    from pipeline.job.cluster import start_cluster
    cfg = load_config(None, [f"input={json.dumps(sys.argv[1])}", f"output={json.dumps(sys.argv[2])}",
                             f"model.checkpoint={json.dumps(sys.argv[3])}", "run.address=local",
                             "engine.lanes=64", "engine.group=32", "engine.compile=false",
                             f"run.dashboard_port={sys.argv[4]}"])
    ctx = start_cluster(cfg)   # the job's own Ray cluster, its model and cache actors
    ps = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout.split()[2:]
    kids = {}
    for pid, ppid in zip(ps[::2], ps[1::2]):
        kids.setdefault(int(ppid), []).append(int(pid))
    mine, todo = set(), [os.getpid()]
    while todo:
        p = todo.pop()
        mine.add(p)
        todo += kids.get(p, [])
    inodes = {}
    for p in mine:
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                link = os.readlink(f"/proc/{p}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = p
        except OSError:
            pass
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:
                listening.append([f[1].split(":")[0], int(f[1].split(":")[1], 16), inodes[f[9]]])
    ctx.shutdown()
    print("LISTENING " + json.dumps({"processes": len(mine), "sockets": listening}))
''')

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_nothing_listens_beyond_loopback(tmp_path):
    """... also when the dashboard port the run asks for is taken (another local run on
    the machine): it moves to a free one and says so, instead of failing to start."""
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    make_input(tmp_path / "in", n_shards=1, max_bytes=3000)
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    taken = other.getsockname()[1]
    try:
        res = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "in"), str(tmp_path / "out"), ckpt, str(taken)],
                             capture_output=True, text=True, env=env(), timeout=300)
    finally:
        other.close()
    assert f"127.0.0.1:{taken} is taken" in res.stderr, res.stderr[-2000:]
    line = [x for x in res.stdout.splitlines() if x.startswith("LISTENING ")]
    assert line, res.stdout[-2000:] + res.stderr[-2000:]
    found = json.loads(line[0][len("LISTENING "):])
    assert found["processes"] > 3 and found["sockets"], found  # Ray's servers were there to check
    outside = [s for s in found["sockets"] if s[0] not in LOOPBACK]
    assert not outside, outside
    # Metrics are on by default: the local cluster's dashboard and this node's Prometheus
    # endpoint are printed, on loopback, and they are what listens there.
    where = re.search(r"metrics: dashboard http://127\.0\.0\.1:(\d+), metrics http://127\.0\.0\.1:(\d+)/metrics", res.stderr)
    assert where, res.stderr[-2000:]
    ports = {s[1] for s in found["sockets"]}
    assert int(where.group(1)) in ports and int(where.group(2)) in ports and int(where.group(1)) != taken


def test_untrusted_checkpoint_cannot_run_code(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": Evil()}, evil)
    make_input(tmp_path / "in", n_shards=1, max_bytes=3000)
    rc = cli(["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--checkpoint", str(evil),
              "--no-progress", "--set", "run.address=local", "--set", "run.metrics=false"])
    err = capsys.readouterr().err
    # Refused where the driver reads the checkpoint's fingerprint, before any cluster
    # starts, in one line.
    assert rc == 2 and "cannot read the checkpoint" in err and "Unsupported global" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not marker.exists()


SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYzz-fake-secret"


def test_credentials_never_printed_in_errors(tmp_path, capsys):
    # A URL with inline credentials, for a bucket that does not exist on an endpoint
    # that is not there: every error path must scrub the secret.
    url = f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@nowhere-bucket/corpus/"
    rc = cli(["run", "--input", url, "--output", str(tmp_path / "out"), "--no-progress", "--set", "run.address=local",
              "--storage-option", "endpoint_url=http://127.0.0.1:9", "--storage-option", f"secret={SECRET}",
              "--storage-option", "key=AKIAIOSFODNN7EXAMPLE"])
    printed = capsys.readouterr()
    assert rc == 2
    assert SECRET not in printed.out + printed.err and "AKIAIOSFODNN7EXAMPLE" not in printed.out + printed.err
    assert "cannot list input" in printed.err
    for p in Path(tmp_path).rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


def test_a_process_that_receives_a_config_redacts_its_credentials():
    """No entry point has to remember it: a config unpickled in another process (as a
    Ray task or actor receives it) registers its credentials there."""
    secret = "plain-secret-value-9f3"  # matches no credential pattern: only registration hides it
    cfg = JobConfig(input="/in", output="/out", storage_options={"secret": secret, "client_kwargs": {"token": secret}})
    code = ("import pickle, sys\nfrom pipeline.redact import redact\n"
            f"before = redact({('failed talking to ' + secret)!r})\n"
            "pickle.loads(sys.stdin.buffer.read())\n"
            f"print(before, '|', redact({('failed talking to ' + secret)!r}))")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(cfg), capture_output=True, check=True)
    before, after = out.stdout.decode().strip().split(" | ")
    assert secret in before and secret not in after and after == "failed talking to ***"
