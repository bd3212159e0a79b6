"""A corpus of hostile shards: each document is compressed (and verifies) or rejected
with its reason, bad files are quarantined, the job never dies, and the books balance."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
import zstandard

from compressor_model.model import ByteLM, ModelConfig
from pipeline.job.cluster import init_local_ray
from pipeline.job.driver import run_job
from pipeline.commands.verify import verify_output
from tests.pipeline_fixtures import job_config, tiny_checkpoint

pytestmark = pytest.mark.slow


def write_corpus(d):
    d.mkdir()
    code = "def f(x):\n    return x * 2\n"
    lines = [json.dumps({"id": f"ok{i}", "content": code * (i + 1)}) for i in range(30)]
    good = zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode())
    (d / "good.jsonl.zst").write_bytes(good)
    (d / "truncated.jsonl.zst").write_bytes(good[: len(good) // 2])
    (d / "corrupt.jsonl.zst").write_bytes(good[:8] + os.urandom(len(good) - 8))
    pq.write_table(pa.table({"content": pa.array([1, 2, 3], pa.int64())}), d / "wrongtype.parquet")
    (d / "notjson.jsonl").write_text('{"content": "a = 1\\n"}\n{oops\n[1, 2]\n"just a string"\n{"content": "b = 2\\n"}\n')
    (d / "nul.jsonl").write_text(json.dumps({"content": "x = '\x00\x00'\n" + "\x00" * 300 + "y\n"}) + "\n")
    pq.write_table(pa.table({"content": pa.array([b"ok = 1\n", b"\xc3\x28 bad utf8", b"fine = 2\n"], pa.binary())}),
                   d / "badutf8.parquet")
    (d / "empty.jsonl").write_bytes(b"")
    (d / "random.jsonl").write_bytes(os.urandom(20_000))
    with open(d / "huge.jsonl", "w") as f:  # one 12 MB document: over the configured max_document_bytes (8 MB)
        f.write(json.dumps({"id": "huge", "content": "z = 0  # " * (12_000_000 // 9)}) + "\n")
        f.write(json.dumps({"id": "after-huge", "content": "print('still here')\n"}) + "\n")
    long_line = "".join(f"v{i} = {i}; " for i in range(60_000))[:600_000]  # a 600 KB single line: 3 slices
    (d / "oneline.jsonl").write_text(json.dumps({"id": "oneline", "content": long_line}) + "\n")
    return {"truncated", "corrupt", "wrongtype"}  # files that cannot be read as a whole


def test_hostile_corpus(tmp_path):
    bad_files = write_corpus(tmp_path / "in")
    # The smallest model that runs the whole job, in fp32 (eager int8 attention over
    # these 1024-row calls is slower): this test is about input, not compression.
    torch.manual_seed(0)
    ckpt = tiny_checkpoint(tmp_path / "micro.pt", ByteLM(ModelConfig(block_size=128, n_layer=1, n_head=1, n_embd=32)))
    cfg = job_config(str(tmp_path / "in"), str(tmp_path / "out"), ckpt, "reader.max_document_bytes=8000000",
                     "engine.lanes=2048", "engine.group=1024", "engine.precision=fp32", "segment.call_positions=32768", "run.doc_slice_bytes=250000", "run.batch_bytes=200000",
                     "run.torch_threads=2")
    init_local_ray(num_cpus=2, logging_level="ERROR")
    try:
        s = run_job(cfg, log=lambda m: None)
    finally:
        ray.shutdown()
    assert set(s.failed) == bad_files
    for name, reason in s.failed.items():
        assert f"{name}." in reason  # names the file
    assert "cannot read further" in s.failed["truncated"] and "row" in s.failed["truncated"]
    assert "column 'content' has type int64" in s.failed["wrongtype"]
    done = {p.stem for p in (tmp_path / "out" / "_done").glob("*.json")}
    assert done == {"good", "notjson", "nul", "badutf8", "empty", "huge", "oneline", "random"}
    # Books balance for every shard that completed.
    for name in done:
        m = json.loads((tmp_path / "out" / "_done" / f"{name}.json").read_text())
        rejects = (tmp_path / "out" / "_rejects" / f"{name}.jsonl").read_text().splitlines()
        assert m["docs_in"] == m["rows"] + m["rejects"] == m["rows"] + len(rejects)
    reasons = {name: [json.loads(x)["reason"] for x in (tmp_path / "out" / "_rejects" / f"{name}.jsonl").read_text().splitlines()]
               for name in done}
    assert any("max_document_bytes" in r for r in reasons["huge"]) and len(reasons["huge"]) == 1
    assert any("not valid UTF-8" in r for r in reasons["badutf8"])
    assert sum(r.startswith("not JSON") for r in reasons["notjson"]) == 1
    rows = {name: pq.read_table(tmp_path / "out" / "shards" / f"{name}.parquet").column("doc_id").to_pylist() for name in done}
    assert rows["huge"] == ["after-huge"] and rows["oneline"] == ["oneline"] and rows["empty"] == rows["random"] == []
    assert reasons["random"] and all(r.startswith(("not JSON", "row is a JSON", "blank line")) for r in reasons["random"])
    assert len(rows["good"]) == 30 and len(rows["nul"]) == 1 and len(rows["badutf8"]) == 2
    # Everything that was compressed decodes back exactly (the 600 KB line included).
    rep = verify_output(cfg, sample=10_000)
    assert rep["ok"] and rep["checked_docs"] == sum(map(len, rows.values()))
