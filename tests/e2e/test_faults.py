"""Faults with real Ray processes: killed model actor, coder worker, cache actor and
driver, and an object store that goes away mid-write. Every run must end with output
byte-identical to an undisturbed run, and no partial file may ever be visible."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import s3fs
import zstandard

from pipeline.job.cluster import init_local_ray
from pipeline.job.driver import run_job
from pipeline.commands.verify import verify_output
from pipeline.job.plan import shard_status
from tests.pipeline_fixtures import job_config, make_input, sha256, tiny_checkpoint
from tests.procs import BIN, env, free_port, started, stop

pytestmark = pytest.mark.slow
SECRET = "fake-secret-key-for-tests-d41d8cd98f00b204"
SLOW = ("run.batch_bytes=1000", "run.max_retries=3", "run.retry_backoff_s=0.2", "cache.shards=2", "run.small_shard_bytes=0")


@pytest.fixture(scope="module")
def cluster():
    init_local_ray(num_cpus=2, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    ckpt = tiny_checkpoint(root / "tiny.pt")
    make_input(root / "in", n_shards=4, max_bytes=24_000)
    # At full speed: SLOW changes the scheduling only, never the bytes (outputs are batch-invariant).
    s = run_job(job_config(str(root / "in"), str(root / "ref"), ckpt), log=lambda m: None)
    assert s.shards_done == 4
    return root, ckpt, shard_hashes(root / "ref")


def shard_hashes(out: Path) -> dict:
    return {p.name: sha256(p) for p in sorted((out / "shards").glob("*.parquet"))}


def named(kind: str):
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(kind)]
    return names


def run_with_fault(cfg, inject):
    """Run the job in a thread; once a shard is in flight and has made progress, call
    inject(progress_actor) once. Returns the summary and whether the fault fired."""
    out = {}
    t = threading.Thread(target=lambda: out.update(summary=run_job(cfg, log=lambda m: None)))
    t.start()
    fired = False
    deadline = time.time() + 120
    while t.is_alive() and time.time() < deadline and not fired:
        names = named("-progress")
        if names:
            prog = ray.get_actor(names[-1])
            docs, _ = ray.get(prog.get.remote())
            flying = ray.get(prog.in_flight.remote())
            if docs > 0 and flying:
                inject(prog, flying)
                fired = True
        time.sleep(0.05)
    t.join(timeout=300)
    assert not t.is_alive()
    return out["summary"], fired


def kill_actor_process(suffix):
    def inject(prog, flying):
        actor = ray.get_actor(named(suffix)[-1])
        os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)
    return inject


@pytest.mark.parametrize("what", ["model", "coder worker", "cache", "stalled coder worker"])
def test_killed_process_mid_shard(setup, tmp_path, what):
    """A process lost mid-shard, or one that stops making progress (SIGSTOP: a wedged
    read, a hung call), is a system failure: retried without spending the shard's
    own retries, and the output is the same bytes."""
    root, ckpt, ref = setup
    # No retries of a shard's own: losing a process is a system failure, retried apart.
    cfg = job_config(str(root / "in"), str(tmp_path / "out"), ckpt, *SLOW, "run.max_retries=0", "run.stall_timeout_s=4")
    if what in ("coder worker", "stalled coder worker"):
        def inject(prog, flying):
            os.kill(next(iter(flying.values())), signal.SIGSTOP if what.startswith("stalled") else signal.SIGKILL)
    else:
        inject = kill_actor_process("-model-0" if what == "model" else "-cache-0")
    s, fired = run_with_fault(cfg, inject)
    assert fired, "the job finished before the fault could be injected"
    assert s.shards_done == 4 and s.shards_failed == 0, s.failed
    # (the cache client takes a lost cache actor's keys as misses: nothing to retry there)
    assert "task" not in s.retries and (what == "cache" or s.retries.get("system", 0) >= 1), s.retries
    assert shard_hashes(tmp_path / "out") == ref


def test_a_straggler_at_the_tail_gets_a_duplicate_and_one_commit(setup, tmp_path):
    """A shard task that stops moving (SIGSTOP; stall detection off) while the rest
    finish: once a worker is idle and nothing waits, it gets a duplicate attempt, which
    commits. Resumed, the stopped attempt leaves no trace (its files are discarded),
    and the output is the same bytes."""
    root, ckpt, ref = setup
    out = tmp_path / "out"
    cfg = job_config(str(root / "in"), str(out), ckpt, *SLOW, "run.max_retries=0", "run.stall_timeout_s=0",
                     "run.straggler_factor=1.5", "run.straggler_min_s=0")
    stopped = []

    def inject(prog, flying):
        stopped.append(next(iter(flying.values())))
        os.kill(stopped[0], signal.SIGSTOP)

    try:
        s, fired = run_with_fault(cfg, inject)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    # (on a busy machine another slow task may get its duplicate too: at least this one did)
    assert fired and s.shards_done == 4 and s.retries.get("straggler", 0) >= 1 and "task" not in s.retries, (s.retries, s.failed)
    deadline = time.time() + 60  # the resumed attempt is cancelled, or finds its group taken: it discards its files
    while any((out / "_tmp").iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    assert not any((out / "_tmp").iterdir())
    assert shard_hashes(out) == ref and not check_no_partial(out)
    assert len(list((out / "_done").glob("*.json"))) == 4 and not (out / "_failed").exists()


def start_driver(root: Path, out: Path, ckpt: str, log: Path, *extra: str) -> subprocess.Popen:
    """`proxycomp run` as a user starts it, on a local Ray cluster of its own, slowed down
    (small batches, one shard at a time: a signal lands between its first commit and its
    last, with no more work for the machine)."""
    cmd = [str(BIN / "proxycomp"), "run", "--input", str(root / "in"), "--output", str(out), "--checkpoint", ckpt,
           "--no-progress", "--set", "run.address=local", "--set", "run.metrics=false"]
    cmd += [x for kv in ["engine.lanes=64", "engine.group=32", "engine.compile=false", "segment.call_positions=512", "run.torch_threads=1",
                         "calibration.bytes=20000", *SLOW, "run.shard_workers=1", *extra] for x in ("--set", kv)]
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env(), start_new_session=True)


def wait_first_marker(proc: subprocess.Popen, out: Path, seen_partial: list) -> None:
    deadline = time.time() + 180
    while time.time() < deadline:
        seen_partial += check_no_partial(out)
        if len(list((out / "_done").glob("*.json"))) >= 1 if (out / "_done").exists() else False:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "driver finished before it could be stopped"


def test_killed_driver_then_resubmit(setup, tmp_path):
    root, ckpt, ref = setup
    out = tmp_path / "out"
    seen_partial = []
    proc = start_driver(root, out, ckpt, tmp_path / "driver.log")
    try:
        wait_first_marker(proc, out, seen_partial)
        stop(proc, grace=0.0)  # SIGKILL, as a preemption would, to the driver and its local Ray cluster
    finally:
        stop(proc)
    done_before = len(list((out / "_done").glob("*.json")))
    assert 1 <= done_before < 4
    seen_partial += check_no_partial(out)
    assert not seen_partial, seen_partial
    cfg = job_config(str(root / "in"), str(out), ckpt)  # the same content settings, at full speed
    s = run_job(cfg, log=lambda m: None)
    assert s.shards_skipped == done_before and s.shards_done == 4 - done_before
    assert shard_hashes(out) == ref
    assert not (out / "_tmp").exists() or not any((out / "_tmp").iterdir())


def test_a_running_driver_holds_its_output_keeps_its_ledger_and_drains_on_sigterm(setup, tmp_path, capsys):
    """One running `proxycomp run`, three things an operator meets:
    - a second driver on its output (a manual `--shards` rerun, or `calibrate`) is
      refused, naming it, before it starts or clears anything;
    - the marker ledger follows the shards it commits (run.log_every_s), so `status`
      during the run reads markers from it;
    - SIGTERM (a preemption notice) drains it: no new shard starts, the ones in flight
      commit, the run's summary is written, exit 75 says "resubmit", and the
      resubmitted command makes the rest, byte-identical."""
    from pipeline.cli import main as cli

    root, ckpt, ref = setup
    out = tmp_path / "out"
    proc = start_driver(root, out, ckpt, tmp_path / "driver.log", "run.log_every_s=0.5")
    try:
        wait_first_marker(proc, out, [])
        holder = json.loads((out / "_driver.json").read_text())
        same = [x for kv in ["segment.call_positions=512", "calibration.bytes=20000"] for x in ("--set", kv)]
        rc = cli(["run", "--input", str(root / "in"), "--output", str(out), "--checkpoint", ckpt, "--shards", "part-00003",
                  "--force", "--no-progress", "--set", "run.address=local", *same])
        err = capsys.readouterr().err
        assert rc == 2 and f"another driver is writing {out}: run {holder['run_id']}" in err, err
        # New thresholds under it would mix two segmentations: `calibrate` is refused alike.
        rc = cli(["calibrate", "--input", str(root / "in"), "--output", str(out), "--checkpoint", ckpt,
                  "--set", "run.address=local", *same])
        err = capsys.readouterr().err
        assert rc == 2 and f"run {holder['run_id']}" in err and (out / "thresholds.json").exists(), err
        seen, deadline = set(), time.time() + 30
        while not seen and time.time() < deadline and proc.poll() is None:
            done = {p.stem for p in (out / "_done").glob("*.json")}
            try:
                ledger = json.loads(zstandard.ZstdDecompressor().decompress((out / "_index" / "markers.json.zst").read_bytes()))
                seen = set(ledger.get("_done", {})) & done if len(done) < 4 else set()
            except (OSError, zstandard.ZstdError, ValueError):  # not there yet, or read while replaced
                pass
            time.sleep(0.1)
        assert seen, "no marker of the running job reached the ledger while it ran"
        os.kill(proc.pid, signal.SIGTERM)
        status = proc.wait(timeout=240)
    finally:
        stop(proc)
    log = (tmp_path / "driver.log").read_text()
    assert status == 75, log[-3000:]
    done = len(list((out / "_done").glob("*.json")))
    assert 1 <= done < 4 and not check_no_partial(out) and not (out / "_driver.json").exists()
    assert "SIGTERM: draining" in log and "drained on SIGTERM" in log and "Traceback" not in log, log[-3000:]
    summaries = [json.loads(p.read_text()) for p in (out / "_runs").glob("*.json")]
    assert len(summaries) == 1 and summaries[0]["drained"] and summaries[0]["shards_done"] == done
    assert summaries[0]["shards_left"] == 4 - done
    s = run_job(job_config(str(root / "in"), str(out), ckpt), log=lambda m: None)
    assert s.shards_skipped == done and s.shards_done == 4 - done
    assert shard_hashes(out) == ref


def test_interrupted_driver_says_what_it_finished(setup, tmp_path):
    """Ctrl-C: exit status 130 and one line saying how many shards were committed and
    that the same command continues; no traceback. The log (as `ray job logs` shows it,
    no terminal) has no advice to turn Ray's authentication off either."""
    root, ckpt, _ = setup
    out = tmp_path / "out"
    proc = start_driver(root, out, ckpt, tmp_path / "driver.log")
    try:
        wait_first_marker(proc, out, [])
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        stop(proc)
    log = (tmp_path / "driver.log").read_text()
    last = log.strip().splitlines()[-1]
    done = len(list((out / "_done").glob("*.json")))
    assert 1 <= done < 4
    assert last.startswith("proxycomp: interrupted after ") and f": {done} shard(s) finished and committed" in last, log[-3000:]
    assert "Run the same command again to continue" in last
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
    assert "Token authentication" not in log and "RAY_AUTH_MODE" not in log, log[:3000]


def check_no_partial(out: Path) -> list:
    """Every visible shard file is a complete Parquet; every marker names a file whose
    checksum it matches."""
    bad = []
    for p in (out / "shards").glob("*.parquet") if (out / "shards").exists() else []:
        try:
            pq.read_metadata(p)
        except Exception as e:  # noqa: BLE001
            bad.append(f"{p.name}: {e}")
    for m in (out / "_done").glob("*.json") if (out / "_done").exists() else []:
        marker = json.loads(m.read_text())
        if sha256(out / "shards" / f"{m.stem}.parquet") != marker["parquet"]["sha256"]:
            bad.append(f"{m.stem}: marker does not match")
    return bad


def test_object_store_down_mid_write(setup, tmp_path, monkeypatch, capfd):
    """s3:// input and output on a real S3-compatible server; then the store goes away
    mid-job and comes back empty, and a resubmission still ends with the right bytes."""
    root, ckpt, ref = setup
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    so = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": SECRET}
    moto = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    cfg = job_config(str(root / "in"), "s3://out/run", ckpt, *SLOW, storage_options=so)
    with started(moto, port, tmp_path / "moto1.log"):
        fs = s3fs.S3FileSystem(**so)
        fs.mkdir("corpus")
        for p in sorted((root / "in").iterdir()):
            fs.put_file(str(p), f"corpus/in/{p.name}")
        from_s3 = job_config("s3://corpus/in", "s3://corpus/out", ckpt, storage_options=so)
        assert run_job(from_s3, log=lambda m: None).shards_done == 4
        assert run_job(from_s3, log=lambda m: None).shards_skipped == 4
        # Drift: one input shard rewritten in the store after its output was made (a
        # removal request applied to the corpus). Seen from the listing's ETag alone.
        lines = zstandard.ZstdDecompressor().decompress(fs.cat_file("corpus/in/part-00001.jsonl.zst")).splitlines(True)
        fs.pipe_file("corpus/in/part-00001.jsonl.zst", zstandard.ZstdCompressor().compress(b"".join(lines[:-1])))
        st = shard_status(from_s3)
        assert st["stale"] == ["part-00001"] and st["counts"]["done"] == 4, st
        assert run_job(from_s3, log=lambda m: None, keep_stale=True).nothing_to_do
        said = []
        again = run_job(from_s3, log=said.append)
        assert again.shards_done == 1 and again.shards_skipped == 3 and again.docs_in == len(lines) - 1, again.failed
        assert any("changed input" in m and "part-00001" in m for m in said), said
        assert shard_status(from_s3)["stale"] == []
        rep = verify_output(from_s3, sample=5)
        assert rep["ok"] and rep["checked_docs"] == 5
        # The secret never lands in outputs, and never in what the jobs printed.
        for path in fs.find("corpus/out"):
            assert SECRET.encode() not in fs.cat_file(path), path
        printed = capfd.readouterr()
        assert SECRET not in printed.out and SECRET not in printed.err

    def run():
        box["summary"] = run_job(cfg, log=lambda m: None)

    box: dict = {}
    server = started(moto, port, tmp_path / "moto2.log")
    server.__enter__()
    fs = s3fs.S3FileSystem(**so)
    fs.invalidate_cache()
    fs.mkdir("out")
    t = threading.Thread(target=run)
    t.start()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not fs.exists("out/run/_done/part-00000.json"):
            fs.invalidate_cache()
            time.sleep(0.1)
        server.__exit__(None, None, None)  # the store goes away mid-job, then comes back empty
        time.sleep(1.0)
        server = started(moto, port, tmp_path / "moto3.log")
        server.__enter__()
        fs = s3fs.S3FileSystem(**so)
        fs.invalidate_cache()
        fs.mkdir("out")
        t.join(timeout=300)
        s = box["summary"]
        # Whatever happened, nothing partial is marked done.
        fs.invalidate_cache()
        for m in fs.glob("out/run/_done/*.json"):
            marker = json.loads(fs.cat_file(m))
            data = fs.cat_file(f"out/run/shards/{marker['name']}.parquet")
            assert hashlib.sha256(data).hexdigest() == marker["parquet"]["sha256"]
        assert s.shards_done + s.shards_failed == 4
        for reason in s.failed.values():
            assert SECRET not in reason
        # A resubmission finishes the job; the store lost what it had before the outage.
        again = run_job(job_config(str(root / "in"), "s3://out/run", ckpt, storage_options=so), log=lambda m: None)
        assert again.shards_failed == 0
        fs.invalidate_cache()
        got = {p.rsplit("/", 1)[-1]: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in fs.ls("out/run/shards")}
        assert got == ref  # the same bytes as the reference run on local files
    finally:
        server.__exit__(None, None, None)
