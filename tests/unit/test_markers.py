"""Shard states from listings: a status pass costs a few listings and one batched read,
not one or two requests per shard."""

from __future__ import annotations

import json
import os
import time
from collections import Counter

from fsspec.implementations.local import LocalFileSystem

from pipeline.job.plan import plan_tasks, shard_status, write_manifest
from pipeline.store.layout import Marker
from pipeline.store.markers import MarkerIndex
from tests.pipeline_fixtures import job_config


def make_output(root, n=60, done=50, failed=(48, 49, 55, 56)):
    (root / "in").mkdir(parents=True)
    for i in range(n):
        (root / "in" / f"part-{i:05d}.jsonl").write_text('{"content": "x = 1\\n"}\n')
    for kind in ("_done", "_failed"):
        (root / "out" / kind).mkdir(parents=True)
    for i in range(done):
        marker = {"name": f"part-{i:05d}", "input": "x", "rows": 1, "rejects": 0, "docs_in": 1, "bytes_in": 6,
                  "symbols_out": 2, "parquet": {}, "namespace": "ns"}
        (root / "out" / "_done" / f"part-{i:05d}.json").write_text(json.dumps(marker))
    for i in failed:  # 48 and 49 failed once, then succeeded
        (root / "out" / "_failed" / f"part-{i:05d}.json").write_text(json.dumps({"reason": f"bad {i}"}))
    (root / "out" / "_done" / ".tmp-1234-part-00059.json").write_text("{")  # a write in progress
    return job_config(str(root / "in"), str(root / "out"), "unused.pt")


def test_index_lists_once_and_reads_markers_in_one_batch(tmp_path, monkeypatch):
    cfg = make_output(tmp_path)
    index = MarkerIndex(cfg.output, {})
    assert len(index.done) == 50 and index.failed == {"part-00055", "part-00056"}
    calls = Counter()
    cat = LocalFileSystem.cat

    def counting_cat(self, paths, *a, **kw):
        calls["cat"] += 1
        calls["files"] += len(paths)
        return cat(self, paths, *a, **kw)

    monkeypatch.setattr(LocalFileSystem, "cat", counting_cat)
    got = index.markers(Marker.DONE, [f"part-{i:05d}" for i in range(60)])
    assert len(got) == 50 and calls == {"cat": 1, "files": 50}
    index.markers(Marker.DONE, ["part-00001", "part-00002"])
    assert calls["cat"] == 1  # kept


def test_status_and_manifest_do_not_probe_each_shard(tmp_path, monkeypatch):
    cfg = make_output(tmp_path)
    plan_tasks(cfg)  # warm
    probes = Counter()
    # On a local disk, listing and reading are per-file calls anyway; what must not
    # happen is a probe per shard (on an object store, a request each).
    for name in ("exists", "isfile", "cat"):
        original = getattr(LocalFileSystem, name)

        def counted(self, *a, _name=name, _original=original, **kw):
            probes[_name] += 1
            return _original(self, *a, **kw)

        monkeypatch.setattr(LocalFileSystem, name, counted)
    st = shard_status(cfg)
    assert st["counts"] == {"total": 60, "done": 50, "failed": 2, "pending": 8, "stale": 0, "unread": 0}
    assert st["failed"] == {"part-00055": "bad 55", "part-00056": "bad 56"}
    assert st["totals"]["rows"] == 50
    assert probes["exists"] + probes["isfile"] < 5 and probes["cat"] == 2, probes  # done and failed: one batch each
    manifest = write_manifest(cfg, plan_tasks(cfg))
    assert Counter(s["status"] for s in manifest["shards"].values()) == {"done": 50, "failed": 2, "pending": 8}


def test_status_over_markers_the_ledger_lacks_counts_them_all_and_reads_a_few(tmp_path, monkeypatch):
    """A large output whose ledger is behind (a running job): the counts come from the
    listing; only max_reads markers are fetched, and `unread` says what the totals and
    the stale check do not cover yet. Those in the ledger are read for free."""
    cfg = make_output(tmp_path)
    fetched = []
    cat = LocalFileSystem.cat
    monkeypatch.setattr(LocalFileSystem, "cat", lambda self, paths, *a, **kw: fetched.extend(paths) or cat(self, paths, *a, **kw))
    st = shard_status(cfg, max_reads=10)
    assert st["counts"] == {"total": 60, "done": 50, "failed": 2, "pending": 8, "stale": 0, "unread": 40}
    assert st["totals"]["rows"] == 10 and len(st["done"]) == 50
    assert len([p for p in fetched if "/_done/" in p]) == 10
    first = MarkerIndex(cfg.output, {})
    first.markers(Marker.DONE, sorted(first.done)[:30])
    first.save()
    st = shard_status(cfg, max_reads=10)
    assert st["counts"]["unread"] == 10 and st["totals"]["rows"] == 40
    assert shard_status(cfg)["counts"]["unread"] == 0


def test_ledger_spares_reading_markers_again_and_notices_rewrites(tmp_path, monkeypatch):
    cfg = make_output(tmp_path)
    first = MarkerIndex(cfg.output, {})
    first.markers(Marker.DONE, sorted(first.done))
    first.markers(Marker.FAILED, sorted(first.failed))
    first.save()
    assert (tmp_path / "out" / "_index" / "markers.json.zst").exists()

    # Shard 7 is rerun (its marker rewritten, other content), shard 50 is new.
    time.sleep(0.01)  # a later modification time on a coarse-clock filesystem
    changed = {"name": "part-00007", "rows": 99, "namespace": "ns2"}
    (tmp_path / "out" / "_done" / "part-00007.json").write_text(json.dumps(changed))
    (tmp_path / "out" / "_done" / "part-00050.json").write_text(json.dumps({"name": "part-00050", "rows": 5}))
    fetched = []
    cat = LocalFileSystem.cat
    monkeypatch.setattr(LocalFileSystem, "cat", lambda self, paths, *a, **kw: fetched.extend(paths) or cat(self, paths, *a, **kw))
    second = MarkerIndex(cfg.output, {})
    got = second.markers(Marker.DONE, sorted(second.done))
    assert sorted(p.rsplit("/", 1)[-1] for p in fetched) == ["part-00007.json", "part-00050.json"]
    assert got["part-00007"] == changed and got["part-00050"]["rows"] == 5 and got["part-00003"]["namespace"] == "ns"
    assert second.markers(Marker.FAILED, sorted(second.failed)) == {n: {"reason": f"bad {n[-2:]}"} for n in ("part-00055", "part-00056")}

    # A damaged ledger is a lost cache, not an error.
    (tmp_path / "out" / "_index" / "markers.json.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    fetched.clear()
    third = MarkerIndex(cfg.output, {})
    assert third.markers(Marker.DONE, sorted(third.done)) == got and len(fetched) == 51


def test_no_marker_survives_for_a_parquet_the_store_lost_while_it_was_written(tmp_path, monkeypatch):
    """The marker's upload retries through an outage; a store that comes back empty then
    holds a marker and no Parquet. The commit looks again after the marker and takes it back."""
    from pipeline.job import shard
    from pipeline.job.plan import ShardTask
    from pipeline.job.shard import commit_marker
    from pipeline.job.stages import ShardResult

    from pipeline.store.parquet import OutputMeta

    META = OutputMeta("gzip", namespace="n", fingerprint="f", numerics="exact", n_symbols=256)
    cfg = make_output(tmp_path, n=1, done=0, failed=())
    task = ShardTask(0, str(tmp_path / "in" / "part-00000.jsonl"), "part-00000")
    parquet = tmp_path / "out" / "shards" / "part-00000.parquet"
    parquet.parent.mkdir()
    parquet.write_bytes(b"PAR1" * 10)
    res = ShardResult("part-00000", task.input_url, "done", parquet={"rows": 1, "bytes": 40, "sha256": "x"})
    real = shard.write_json_atomic

    def store_restarts_empty_during(url, obj, so=None):
        real(url, obj, so)
        if "/_done/" in url:
            parquet.unlink()

    monkeypatch.setattr(shard, "write_json_atomic", store_restarts_empty_during)
    try:
        commit_marker(task, cfg, res, META)
    except OSError as e:
        assert "part-00000.parquet: None bytes in the store, 40 were written" in str(e)
    else:
        raise AssertionError("committed a marker for a lost Parquet")
    assert not (tmp_path / "out" / "_done" / "part-00000.json").exists()

    parquet.write_bytes(b"PAR1" * 10)
    monkeypatch.setattr(shard, "write_json_atomic", real)
    commit_marker(task, cfg, res, META)  # the retry: both written, the marker stays
    assert json.loads((tmp_path / "out" / "_done" / "part-00000.json").read_text())["parquet"]["bytes"] == 40


def test_a_changed_input_is_stale_from_the_listing_alone(tmp_path):
    """The listing tag (ETag where the store has one; size and mtime here) of each input
    shard is what a done marker records; a rewritten shard no longer matches it."""
    from pipeline.job.plan import changed_inputs, plan_input

    root = tmp_path / "in"
    root.mkdir()
    for i in range(3):
        (root / f"part-{i:05d}.jsonl").write_text(json.dumps({"content": f"x = {i}\n"}) + "\n")
    before = plan_input(str(root), {})
    markers = {t.name: {"input_fingerprint": t.fingerprint} for t in before}
    markers["part-00002"] = {}  # made by a version that recorded none: not judged
    assert all(t.fingerprint for t in before) and changed_inputs(before, markers) == []
    (root / "part-00001.jsonl").write_text(json.dumps({"content": "x = 'removed on request'\n"}) + "\n")
    os.utime(root / "part-00001.jsonl", (1, 1))
    assert changed_inputs(plan_input(str(root), {}), markers) == ["part-00001"]
