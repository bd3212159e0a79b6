"""The Ray job on an in-process cluster with real shards: outputs, reruns, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml
from proxytrain import DatasetConfig, ProxyDataset

from compressor_model.stdlib import stdlib_files, take_bytes
from pipeline.job import driver as job_module
from pipeline.cli import main as cli
from pipeline.config import load_config
from pipeline.errors import JobError
from pipeline.job.driver import run_job
from pipeline.job.plan import group_small, shard_status
from pipeline.analysis.analyses import AnalysisConfig
from pipeline.analysis.report import write_report
from pipeline.store.parquet import read_meta
from pipeline.commands.demo import write_shards
from pipeline.job.plan import ShardTask
from pipeline.commands.verify import verify_output
from tests.pipeline_fixtures import FAST, job_config, make_input, sha256, tiny_checkpoint
from tests.procs import free_port
from tests.venvs import make_venv

pytestmark = pytest.mark.slow


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def cluster():
    # Custom resources as a mixed cluster declares them per node type (deploy/cluster-gpu.yaml).
    ray.init(address="local", num_cpus=2, resources={"gpu_node": 1, "cpu_node": 4}, include_dashboard=False, logging_level="ERROR",
             _metrics_export_port=METRICS_PORT, _system_config={"metrics_report_interval_ms": 500})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def done_run(cluster, ckpt, tmp_path_factory):
    """A job as a user writes it: a YAML file with paths relative to where it runs."""
    root = tmp_path_factory.mktemp("job")
    make_input(root / "in", n_shards=3)
    settings = {**FAST, "run": {**FAST["run"], "metrics": True, "model_resources": {"gpu_node": 1},
                                "shard_resources": {"cpu_node": 0.01},
                                # the sample read by Ray tasks, as on a cluster; under its name
                                # before the calibration section (YAML of that time still loads)
                                "calibration_local_bytes": 0}}
    (root / "job.yaml").write_text(yaml.safe_dump({"input": "in", "output": "out",
                                                   "model": {"checkpoint": os.path.relpath(ckpt, root)}, **settings}))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = load_config("job.yaml")
    finally:
        os.chdir(cwd)
    assert cfg.calibration.local_bytes == 0 and cfg.calibration.bytes == 20000
    summary = run_job(cfg, log=lambda m: None)
    return cfg, summary, root


def test_run_writes_reconciled_verified_parquet(done_run):
    cfg, summary, root = done_run
    assert summary.shards_done == 3 and summary.shards_failed == 0
    assert summary.docs_in == summary.docs_out + summary.rejects and summary.docs_out > 0
    # The model actor reports its time, so operators can see whether it (the GPU) waits.
    assert summary.model_actors == 1 and 0 < summary.model_time <= summary.seg_time + summary.code_time
    assert 0 < summary.model_busy_fraction <= 1.0 and "busy" in summary.text()
    assert summary.segments >= summary.unique_segments >= summary.cache_hits >= 0
    assert 0 < summary.reused_fraction < 1  # stdlib code repeats segments (blank lines, indents)
    rows = 0
    for name in ("part-00000", "part-00001", "part-00002"):
        marker = json.loads((root / "out" / "_done" / f"{name}.json").read_text())
        pf = pq.ParquetFile(root / "out" / "shards" / f"{name}.parquet")
        meta = read_meta(str(root / "out" / "shards" / f"{name}.parquet"))
        assert meta.schema_version == 1 and meta.compressor == "neural"
        assert meta.fingerprint and meta.namespace == marker["namespace"]
        assert meta.coder["window_bits"] == 16 and meta.thresholds["percentile"] == 95.0
        t = pf.read()
        assert t.num_rows == marker["rows"] and marker["parquet"]["sha256"] == sha256(root / "out" / "shards" / f"{name}.parquet")
        for raw, n, so in zip(t.column("raw").to_pylist(), t.column("n_bytes").to_pylist(), t.column("seg_offsets").to_pylist()):
            assert len(raw) == n == so[-1]
        rows += t.num_rows
    assert rows == summary.docs_out
    assert (root / "out" / "config.yaml").exists() and (root / "out" / "thresholds.json").exists()
    th = json.loads((root / "out" / "thresholds.json").read_text())
    assert th["sample_shards"] == ["part-00000", "part-00001", "part-00002"] and th["sample_seconds"] > 0
    assert summary.calibration["sample_bytes"] == th["sample_bytes"] > 0 and "thresholds:" in summary.text()
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    assert {s["status"] for s in manifest["shards"].values()} == {"done"}
    rep = verify_output(cfg, sample=1000)
    assert rep["ok"] and rep["checked_docs"] == rows


def scrape(port: int) -> list[tuple[str, dict, float]]:
    """(name, labels, value) of the proxycomp series on a Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = []
    for m in re.finditer(r"^(ray_proxycomp_\w+)\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        out.append((m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), float(m.group(3))))
    return out


def test_metrics_reach_the_clusters_prometheus_endpoint(done_run):
    """What the run reported to Ray's metrics, read back from the cluster's own export."""
    _, s, _ = done_run
    want = {"shards_done_total": 3, "shards_remaining": 0, "bytes_in_total": s.bytes_in, "docs_compressed_total": s.docs_out,
            "symbols_out_total": s.symbols_out, "cache_hit_rate": s.cache_hit_rate}
    deadline = time.time() + 30
    while True:
        series = scrape(METRICS_PORT)
        got = {name[len("ray_proxycomp_"):]: v for name, labels, v in series if labels.get("run") == s.run_id}
        busy = [v for name, labels, v in series if name == "ray_proxycomp_model_busy_fraction"
                and labels.get("actor", "").startswith(f"proxycomp-{s.run_id}-model-")]
        if all(got.get(k) == pytest.approx(v) for k, v in want.items()) and busy or time.time() > deadline:
            break
        time.sleep(0.5)
    assert {k: got.get(k) for k in want} == pytest.approx(want)
    assert got.get("rejects_total", 0) == s.rejects and "shards_failed_total" not in got and got["bytes_per_s"] >= 0
    assert busy and 0 < busy[0] <= 1
    assert all(labels["output"] == s.output for name, labels, _ in series if labels.get("run") == s.run_id)


def test_report_is_one_self_contained_page(done_run, tmp_path, capfd):
    """A finished output as one HTML page (pictures inlined, nothing fetched) and JSON."""
    cfg, summary, _ = done_run
    capfd.readouterr()
    out = write_report(cfg.output, str(tmp_path), cfg=AnalysisConfig(sample_bytes=3000, tokenizer_train_bytes=100_000),
                       log=lambda m: None)
    printed = capfd.readouterr()  # nothing: the stability analysis's tokenizer training shows no progress bars
    assert printed.out == "" and "\n\n" not in "\n" + printed.err, (printed.out, printed.err)
    page = (tmp_path / "report.html").read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["counts"]["done"] == 3 and len(data["shards"]) == 3 and data["runs"][0]["run_id"] == summary.run_id
    assert data["runs"][0]["model_busy_fraction"] == pytest.approx(summary.model_busy_fraction)
    assert sorted(out["analyses"]) == sorted(data["analyses"]) == ["ablations", "collisions", "segments", "stability"]
    assert data["analyses"]["segments"]["thresholds_from"] == "the output's thresholds.json"  # the run's own, marked
    for heading in ("Shards", "Rejects and failures", "Runs", "Thresholds", "Analysis: ablations", "Analysis: stability"):
        assert f">{heading}</h" in page
    assert page.count('src="data:image/png;base64,') == 6  # rates, throughput, four analyses
    # tables a person reads: the analyses' too (not Markdown in a <pre>), rejects with their reasons
    assert "<pre>" not in page and "| --- |" not in page and page.count("<table>") >= 8
    assert "<th>bytes/symbol</th>" in page and "<td class='t'>theta abs</td>" in page
    assert len(data["rejected"]) == summary.rejects
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_second_run_skips_and_rerun_is_byte_identical(done_run):
    cfg, _, root = done_run
    before = {p.name: sha256(p) for p in (root / "out" / "shards").iterdir()}
    again = run_job(cfg, log=lambda m: None)
    assert again.nothing_to_do and again.shards_skipped == 3 and again.shards_done == 0
    markers = {p.name: p.stat().st_mtime_ns for p in (root / "out" / "_done").iterdir()}
    logged = []
    rerun = run_job(cfg, shards=["part-00001"], log=logged.append)
    assert rerun.shards_done == 1 and rerun.shards_skipped == 0
    assert "1 shard(s) to run (named by --shards); 2 other shard(s) of the input are done" in logged
    after = {p.name: p.stat().st_mtime_ns for p in (root / "out" / "_done").iterdir()}
    assert [n for n in after if after[n] != markers[n]] == ["part-00001.json"]  # only the named shard was redone
    assert 0 < rerun.cache_loaded["entries"] == done_run[1].cache_kept["entries"]  # started warm, same bytes (below)
    # Small shards share tasks and model calls by default; one task per shard, other lane
    # counts, two lane sets and more torch threads must give the same bytes (model calls
    # are batch-invariant, and scheduling settings stay out of the output's metadata).
    # Nor does the input spelled another way (file://, a trailing slash): the shards'
    # metadata hold the resolved path. No cache, either: every segment is coded.
    ungrouped = job_config(f"file://{cfg.input}/", cfg.output, cfg.model.checkpoint, "run.small_shard_bytes=0",
                           "engine.lanes=128", "engine.lane_sets=2", "run.torch_threads=2", "cache.enabled=false")
    logged = []
    forced = run_job(ungrouped, force=True, log=logged.append)
    assert forced.shards_done == 3
    after = {p.name: sha256(p) for p in (root / "out" / "shards").iterdir()}
    assert after == before
    # Each shard's stats hold the model work done for it: over the shards they add up to
    # the run's summary (which calibrated nothing: the thresholds were there).
    stats = [json.loads((root / "out" / "_stats" / f"{n}.json").read_text()) for n in ("part-00000", "part-00001", "part-00002")]
    assert not any("calibrat" in m for m in logged)
    for key in ("seg_positions", "code_positions", "code_padded_positions", "coded_bytes", "unique_segments"):
        assert all(s[key] > 0 for s in stats) and sum(s[key] for s in stats) == getattr(forced, key), key
    for key in ("seg_time", "code_time", "model_time"):
        assert all(s[key] > 0 for s in stats) and sum(s[key] for s in stats) == pytest.approx(getattr(forced, key)), key
    assert all(s["stage_seconds"]["commit"] > 0 and s["stage_seconds"]["write"] > 0 for s in stats)
    # Each run that wrote shards left its resolved config beside its summary; config.yaml
    # is the latest of them (the run with nothing to do left none).
    runs = sorted((root / "out" / "_runs").glob("*.config.yaml"))
    assert len(runs) == 3 and all(p.with_name(p.name.replace(".config.yaml", ".json")).exists() for p in runs)
    assert (root / "out" / "config.yaml").read_bytes() == runs[-1].read_bytes()
    assert [yaml.safe_load(p.read_text())["run"]["small_shard_bytes"] for p in runs] == [256 << 10, 256 << 10, 0]
    meta = read_meta(str(root / "out" / "shards" / "part-00001.parquet"))
    marker = json.loads((root / "out" / "_done" / "part-00001.json").read_text())
    assert marker["settings"] == meta.settings and re.fullmatch(r"[0-9a-f]{24}", marker["settings"])
    with pytest.raises(JobError, match="no shard matches"):
        run_job(cfg, shards=["nope"], log=lambda m: None)


def test_shards_cannot_mix_settings_into_one_output(done_run, monkeypatch):
    """Refused before anything starts: a plain run, and --shards (with or without
    --force), with settings the output's shards were not made with."""
    cfg, _, root = done_run
    monkeypatch.setattr(job_module, "start_cluster", no_cluster)
    before = {p.name: p.stat().st_mtime_ns for p in (root / "out" / "_done").iterdir()}
    other = job_config(cfg.input, cfg.output, cfg.model.checkpoint, "engine.window_bits=8")
    with pytest.raises(JobError, match="different compressor or settings"):
        run_job(other, log=lambda m: None)
    for force in (False, True):
        with pytest.raises(JobError, match="--shards reruns only the shards it names"):
            run_job(other, shards=["part-00001"], force=force, log=lambda m: None)
    assert {p.name: p.stat().st_mtime_ns for p in (root / "out" / "_done").iterdir()} == before


def no_cluster(cfg):
    raise AssertionError("a run that should start nothing started the model actors")


def test_config_only_rerun_with_nothing_to_do_starts_nothing(done_run, monkeypatch, capsys):
    """`proxycomp run --config job.yaml`, as the shipped RayJob runs it, over a finished
    output: no cluster, "nothing to do", and the marker ledger it read is kept."""
    _, _, root = done_run
    runs, config = sorted((root / "out" / "_runs").iterdir()), (root / "out" / "config.yaml").read_bytes()
    monkeypatch.setattr(job_module, "start_cluster", no_cluster)
    monkeypatch.chdir(root)
    ledger = root / "out" / "_index" / "markers.json.zst"
    ledger.unlink()  # as an output of an older version has none: the no-op pass writes it for the next
    capsys.readouterr()
    assert cli(["run", "--config", "job.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nothing to do: all 3 shard(s) are done") and "0.000" not in out, out
    assert ledger.exists()
    assert sorted((root / "out" / "_runs").iterdir()) == runs and (root / "out" / "config.yaml").read_bytes() == config


def test_an_output_made_with_relative_paths_is_usable_from_anywhere(done_run, tmp_path, monkeypatch, capsys):
    _, _, root = done_run
    out = root / "out"
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["input"] == str(root / "in") and os.path.isabs(stored["model"]["checkpoint"])
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert cli(["status", "--output", os.path.relpath(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"total": 3, "done": 3, "failed": 0, "pending": 0, "stale": 0, "unread": 0}
    assert cli(["verify", "--output", str(out), "--sample", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok_docs"] == 3
    assert cli(["export", "--output", str(out), "--dest", "lingua"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["trainer"]["data.root_dir"] == str(tmp_path / "lingua") and exported["documents"] > 0


def test_a_new_slice_starts_warm_from_an_earlier_output(done_run, ckpt, tmp_path):
    """The next slice of the corpus, written elsewhere, starts from the entries the first
    run kept. The slice is one model call, so a cold start could find nothing in the
    cache (its distinct segments are looked up once, in an empty cache): every hit is
    the earlier run's. (That warm runs write the same bytes: the rerun test above;
    cold against warm on more code: `python -m benchmarks.warm_cache`.)"""
    _, first, root = done_run
    other = take_bytes([f for f in stdlib_files("heldout") if 6000 <= len(f.text) < 9000], 12_000)  # not in the first slice
    write_shards(other, tmp_path / "in", 1, "jsonl")
    (tmp_path / "out").mkdir()  # the corpus's thresholds, from the first slice
    (tmp_path / "out" / "thresholds.json").write_bytes((root / "out" / "thresholds.json").read_bytes())
    warm = run_job(job_config(str(tmp_path / "in"), str(tmp_path / "out"), ckpt, "run.batch_bytes=1000000",
                              f"cache.warm_from={root / 'out' / '_cache'}"), log=lambda m: None)
    print(f"\nsegment cache hit rate on a new slice, warm: {warm.cache_hit_rate:.1%} "
          f"({warm.cache_loaded['entries']} entries kept by earlier runs)")
    assert warm.shards_done == 1 and warm.cache_loaded["entries"] > 0 and first.cache_kept["entries"] > 0
    assert warm.cache_hits > 0 and warm.segments > warm.unique_segments  # one call: repeats were de-duplicated


def test_bad_shards_are_quarantined_and_rows_rejected(cluster, ckpt, tmp_path, capsys):
    inp = tmp_path / "in"
    make_input(inp, n_shards=2)
    good = (inp / "part-00000.jsonl.zst").read_bytes()
    (inp / "truncated.jsonl.zst").write_bytes(good[: len(good) // 2])
    (inp / "mixed.jsonl").write_text(
        json.dumps({"id": "a", "content": "x = 1\n"}) + "\n"
        + "{not json\n"
        + json.dumps({"id": "b", "text": "def f(): pass\n"}) + "\n"
        + json.dumps({"id": "c", "content": ""}) + "\n"
        + json.dumps({"id": "d", "content": 42}) + "\n"
        + json.dumps(["a list"]) + "\n"
    )
    cfg = job_config(str(inp), str(tmp_path / "out"), ckpt)
    s = run_job(cfg, log=lambda m: None)
    assert s.shards_done == 3 and s.shards_failed == 1
    assert "truncated" in s.failed and "truncated.jsonl.zst" in s.failed["truncated"]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "_rejects" / "mixed.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"].split(":")[0]) for r in rejects] == [
        (1, "not JSON"), (3, "empty document"), (4, "field 'content' is int, expected text"), (5, "row is a JSON list, not an object"),
    ]
    t = pq.read_table(tmp_path / "out" / "shards" / "mixed.parquet")
    assert t.column("doc_id").to_pylist() == ["a", "b"] and t.column("source_row").to_pylist() == [0, 2]
    assert s.docs_in == s.docs_out + s.rejects
    st = shard_status(cfg)
    assert st["counts"] == {"total": 4, "done": 3, "failed": 1, "pending": 0, "stale": 0, "unread": 0}
    assert "truncated.jsonl.zst" in st["failed"]["truncated"]
    capsys.readouterr()
    assert cli(["status", "--output", str(tmp_path / "out"), "--failed"]) == 0
    printed = capsys.readouterr().out
    assert f"rerun them: proxycomp run --config {tmp_path / 'out'}/config.yaml --shards truncated" in printed, printed


def test_a_job_whose_shards_all_fail_the_same_way_stops_early(cluster, tmp_path):
    """A mistake that fails every shard ends the job after a few, with the reason, instead
    of walking the whole input into it."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(8):
        (inp / f"part-{i:05d}.jsonl.zst").write_bytes(b"not zstd at all")
    cfg = job_config(str(inp), str(tmp_path / "out"), "", "model.compressor=gzip", "run.shard_workers=1",
                     "run.min_failed_to_stop=3", "run.small_shard_bytes=0")
    with pytest.raises(JobError, match=r"stopped early: 3 of 3 finished shards failed .* 3 of them with: <shard>, "
                                       r"row 0: cannot read further: ZstdError"):
        run_job(cfg, log=lambda m: None)
    assert len(list((tmp_path / "out" / "_failed").iterdir())) < 8


def test_status_and_verify_commands(done_run, capsys):
    cfg, _, root = done_run
    out = str(root / "out")
    assert cli(["status", "--output", out, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["counts"]["done"] == 3 and st["totals"]["rows"] > 0
    assert cli(["verify", "--output", out, "--sample", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok_docs"] == 5
    # A changed byte in a committed Parquet file is caught by its checksum.
    path = root / "out" / "shards" / "part-00002.parquet"
    data = bytearray(path.read_bytes())
    saved = bytes(data)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    try:
        assert cli(["verify", "--output", out, "--sample", "1", "--json"]) == 4
        assert "part-00002" in json.loads(capsys.readouterr().out)["checksum_failures"]
    finally:
        path.write_bytes(saved)


@pytest.mark.parametrize("compressor", ["gzip", "tokenizer"])
def test_other_proxy_compressors_share_pipeline_and_schema(cluster, ckpt, tmp_path, compressor):
    from compressor_model.stdlib import stdlib_files, take_bytes
    from pipeline.backends.whole_document import train_tokenizer

    make_input(tmp_path / "in", n_shards=2)
    tok = tmp_path / "tokenizer.json"
    tok.write_text(train_tokenizer([f.text for f in take_bytes(stdlib_files("train"), 300_000)], 1000).to_str())
    cfg = job_config(str(tmp_path / "in"), str(tmp_path / "out"), ckpt, f"model.compressor={compressor}",
                     f"model.tokenizer={json.dumps(str(tok))}")
    s = run_job(cfg, log=lambda m: None)
    assert s.shards_done == 2 and s.docs_in == s.docs_out + s.rejects
    pf = pq.ParquetFile(tmp_path / "out" / "shards" / "part-00000.parquet")
    meta = read_meta(str(tmp_path / "out" / "shards" / "part-00000.parquet"))
    assert meta.compressor == compressor and meta.n_symbols == (256 if compressor == "gzip" else 1000)
    assert str(pf.schema_arrow.field("symbols").type.value_type) == ("uint16" if compressor == "gzip" else "uint32")
    rep = verify_output(cfg, sample=100)
    assert rep["ok"] and rep["checked_docs"] == s.docs_out
    ds = ProxyDataset(DatasetConfig(urls=[str(tmp_path / "out" / "shards")], seq_len=64), batch_size=2)
    assert ds.vocab.n_symbols == meta.n_symbols
    assert 1.0 < s.bytes_per_symbol < 5.0


def test_small_shards_group_without_starving_workers():
    tasks = [ShardTask(i, f"in/{i}.jsonl", f"s{i}", size) for i, size in enumerate([10, 10, 10, 10, 500, 10, 10])]
    # One worker: all small shards share one group; the big shard stays alone.
    groups = group_small(tasks, small_bytes=100, group_bytes=1000)
    assert [[t.index for t in g] for g in groups] == [[4], [0, 1, 2, 3, 5, 6]]
    # Two workers: the 60 small bytes are split so both can work at once.
    groups = group_small(tasks, small_bytes=100, group_bytes=1000, parallel=2)
    assert [[t.index for t in g] for g in groups] == [[0, 1, 2], [4], [3, 5, 6]]
    assert sorted(t.index for g in groups for t in g) == list(range(len(tasks)))
    # group_bytes still caps a group when there are plenty of small shards.
    many = [ShardTask(i, f"in/{i}", f"s{i}", 10) for i in range(100)]
    assert max(len(g) for g in group_small(many, 100, 50, parallel=2)) == 5


def test_group_hit_rate_counts_distinct_segments(ckpt, tmp_path):
    """A second pass over the same small shards finds every distinct segment in the
    cache: the hit rate is exactly 1, however often a segment repeats in the documents."""
    from cache.local import LocalSegmentCache
    from pipeline.backends.model_actor import ModelService
    from pipeline.backends.neural import NeuralBackend
    from pipeline.job.shard import process_shards
    from pipeline.store.parquet import OutputMeta

    paths = make_input(tmp_path / "in", n_shards=2)
    cfg = job_config(str(tmp_path / "in"), str(tmp_path / "out"), ckpt, "segment.kind=newline")
    backend = NeuralBackend(ModelService(cfg, 1), remote=False)
    tasks = [ShardTask(i, str(p), f"g{i}", p.stat().st_size) for i, p in enumerate(paths)]
    cache = LocalSegmentCache()
    meta = OutputMeta.of(backend.info)
    runs = [[r for _, r in process_shards(tasks, cfg, backend, cache, None, meta)] for _ in range(2)]
    first, second = ([sum(getattr(r, k) for r in rs) for k in ("cache_hits", "unique_segments", "segments")] for rs in runs)
    assert first[2] > first[1], "the sample should repeat segments (e.g. blank lines)"
    assert first[0] < first[1] and second[0] == second[1] == first[1]


READ_IN_TRAINER_VENV = """
import importlib, json, sys
from proxytrain import DatasetConfig, ProxyLoader, labels
loader = ProxyLoader(DatasetConfig(urls=[sys.argv[1]], seq_len=256, epochs=1), batch_size=2)
batches = list(loader)
missing = []
for name in ("ray", "numba", "pipeline", "coder", "compressor_model", "cache"):
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
t = batches[0]["tokens"]
ids = {i: sum(int((b["tokens"] == i).sum()) for b in batches) for i in (1, 2, 3, 4, 5, 6, 12, 13, 14, 15)}
print(json.dumps({"batches": len(batches), "n_symbols": loader.vocab.n_symbols, "missing": missing, "ids": ids,
                  "labelled": int((labels(t, batches[0]["doc_ids"]) >= 0).sum())}))
"""


def test_trainer_package_reads_output_in_a_venv_of_its_own(done_run, tmp_path):
    """A trainer installs only ./trainer (torch, numpy, pyarrow, fsspec): it reads the
    pipeline's output there, its own tests pass there, and the service is not there."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")}
    py = make_venv(tmp_path / "venv", repo / "trainer", "proxytrain", ["pytest"], str(repo / "constraints.txt"), env)
    out = subprocess.run([py, "-c", READ_IN_TRAINER_VENV, str(done_run[2] / "out" / "shards")], check=True,
                         env=env, cwd=tmp_path, capture_output=True, text=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["missing"] == ["ray", "numba", "pipeline", "coder", "compressor_model", "cache"]
    assert got["batches"] > 0 and got["n_symbols"] == 65536 and got["labelled"] > 0
    ids = {int(k): v for k, v in got["ids"].items()}
    assert min(ids[1], ids[2], ids[12], ids[13], ids[14], ids[15]) > 0  # the paper's frame and sentinels ...
    assert ids[3] == ids[4] == ids[5] == ids[6] == 0  # ... not the legacy ones
    tests = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(repo / "trainer" / "tests")],
                           env=env, cwd=tmp_path, capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_a_float_output_made_before_int8_continues_in_its_precision(cluster, ckpt, tmp_path):
    """An output made in fp32 (as before int8 was the default): a run with precision
    auto continues it in fp32 and says so; it verifies; an explicit int8 run is refused
    before anything starts, with the one line that says how to continue it."""
    make_input(tmp_path / "in", n_shards=2)
    inp, out = str(tmp_path / "in"), str(tmp_path / "out")
    run_job(job_config(inp, out, ckpt, "engine.precision=fp32"), shards=["part-00000"], log=lambda m: None)
    said: list[str] = []
    auto = job_config(inp, out, ckpt)
    summary = run_job(auto, log=said.append)
    assert summary.shards_done == 1 and summary.shards_skipped == 1
    assert any(line.startswith("continuing in fp32") for line in said), said
    made = {json.loads(p.read_text())["precision"] for p in (tmp_path / "out" / "_done").iterdir()}
    assert made == {"fp32"}
    assert verify_output(auto, sample=6, log=lambda m: None)["ok"]
    with pytest.raises(JobError, match=r"made in fp32: engine.precision=fp32 continues it"):
        run_job(job_config(inp, out, ckpt, "engine.precision=int8"), log=lambda m: None)


def test_plan_says_what_a_run_would_do_and_writes_nothing(done_run, capsys):
    from pipeline.commands.plan import plan_run

    cfg, summary, root = done_run
    tree = {p: p.stat().st_mtime_ns for p in (root / "out").rglob("*")}
    p = plan_run(cfg, model_bytes=3000, per_gpu=1e6, usd_per_gpu_hour=3.0)
    assert {p2: p2.stat().st_mtime_ns for p2 in (root / "out").rglob("*")} == tree  # nothing written
    assert p["shards"] == 3 and p["output"] == {"done": 3, "stale": 0, "failed": 0, "to_run": 0}
    assert p["to_compress_bytes"] == 0 and p["gpu"]["gpu_hours"] == 0
    est = p["estimated"]["raw_bytes"]
    assert abs(est - summary.bytes_in) / summary.bytes_in < 0.25, (est, summary.bytes_in)
    m = p["model_positions_per_byte"]
    assert m["coding"] > 0.5 and m["segmentation"] >= 1 and m["sample_bytes"] == 3000
    fresh = dataclasses.replace(cfg, output=str(root / "nowhere"))
    q = plan_run(fresh, model_bytes=0, per_gpu=1e6, usd_per_gpu_hour=3.0)
    assert "output" not in q and not (root / "nowhere").exists() and "model_positions_per_byte" not in q
    assert q["gpu"]["usd"] == pytest.approx(q["to_compress_bytes"] / 1e6 / 3600 * 3.0, abs=0.01)
    assert cli(["plan", "--input", cfg.input, "--model-sample-bytes", "0", "--json"]) == 0
    assert "not measured" in json.loads(capsys.readouterr().out)["gpu"]["rate_from"]
