"""Shard readers: every format, fallback fields, rejects with reasons, broken files."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from compressor_model.corpus import Document, ReaderConfig, Reject, ShardError, list_shards, read_shard
from pipeline.redact import redact

ROWS = [{"id": "a", "content": "print(1)\n"}, {"text": "x = 'ü'\n"}, {"id": 7, "content": "y\n" * 3}]


def _write(path, rows, fmt):
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    raw = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw) if fmt.endswith("zst") else raw)


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.zst", "parquet"])
def test_formats_and_fields(tmp_path, fmt):
    p = tmp_path / f"s.{fmt}"
    rows = ROWS if fmt != "parquet" else [{"id": "a", "content": "print(1)\n"}, {"id": None, "content": "x = 'ü'\n"}]
    _write(p, rows, fmt)
    docs = list(read_shard(str(p)))
    assert all(isinstance(d, Document) for d in docs)
    assert docs[0].id == "a" and docs[0].data == b"print(1)\n" and docs[0].row == 0
    assert docs[1].data == "x = 'ü'\n".encode() and docs[1].id == f"s.{fmt}#1"


def test_zstd_multi_frame_and_long_lines(tmp_path):
    big = "z" * 3_000_000
    raw1 = json.dumps({"content": big}).encode() + b"\n"
    raw2 = json.dumps({"content": "tail"}).encode()  # no final newline
    c = zstandard.ZstdCompressor()
    p = tmp_path / "m.jsonl.zst"
    p.write_bytes(c.compress(raw1) + c.compress(raw2))
    docs = list(read_shard(str(p)))
    assert [len(d.data) for d in docs] == [3_000_000, 4]


def test_bad_rows_become_rejects_with_reasons(tmp_path):
    """Every line is a row: a document or a reject with its reason (a blank line too,
    so that documents in = documents out + rejects counts the file's lines)."""
    p = tmp_path / "bad.jsonl"
    p.write_bytes(
        b'{"content": "ok"}\n'
        b"not json\n"
        b'{"other": 1}\n'
        b'{"content": "\\ud800"}\n'
        b'{"content": [1, 2]}\n'
        b"\n"
        b'{"content": "' + b"a" * 100 + b'"}\n'
        b'{"content": null}\n'
        b'{"content": null, "text": "fallback"}\n'
    )
    items = list(read_shard(str(p), ReaderConfig(max_document_bytes=50)))
    kinds = [(type(i).__name__, i.row) for i in items]
    assert kinds == [("Document", 0), ("Reject", 1), ("Reject", 2), ("Reject", 3), ("Reject", 4), ("Reject", 5),
                     ("Reject", 6), ("Reject", 7), ("Document", 8)]
    reasons = [i.reason for i in items if isinstance(i, Reject)]
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == "no 'content' or 'text' field"
    assert "not valid Unicode" in reasons[2]
    assert reasons[3] == "field 'content' is list, expected text"
    assert reasons[4] == "blank line"
    assert "exceeds max_document_bytes 50" in reasons[5]
    assert reasons[6] == "field 'content' is null"
    assert items[-1].data == b"fallback"


def test_null_parquet_value_is_rejected_as_null(tmp_path):
    p = tmp_path / "n.parquet"
    pq.write_table(pa.table({"text": pa.array(["x = 1\n", None], pa.string())}), p)
    items = list(read_shard(str(p)))
    assert isinstance(items[0], Document) and items[1].reason == "field 'text' is null"


def test_binary_parquet_column_requires_utf8(tmp_path):
    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"content": pa.array([b"ok", b"\xff\xfe bad"], pa.binary())}), p)
    items = list(read_shard(str(p)))
    assert isinstance(items[0], Document) and isinstance(items[1], Reject)
    assert "not valid UTF-8 (byte 0)" in items[1].reason
    items = list(read_shard(str(p), ReaderConfig(require_utf8=False)))
    assert items[1].data == b"\xff\xfe bad"


def test_unreadable_shards_raise_with_file_and_row(tmp_path):
    good = zstandard.ZstdCompressor().compress(b"".join(json.dumps({"content": f"r{i}"}).encode() + b"\n" for i in range(50000)))
    t = tmp_path / "t.jsonl.zst"
    t.write_bytes(good[: len(good) // 2])
    with pytest.raises(ShardError, match=r"t\.jsonl\.zst, row \d+: cannot read further: .*truncated"):
        list(read_shard(str(t)))
    c = tmp_path / "c.jsonl.zst"
    c.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00garbage" * 10)
    with pytest.raises(ShardError, match=r"c\.jsonl\.zst, row 0: cannot read further"):
        list(read_shard(str(c)))
    pq.write_table(pa.table({"content": pa.array([1, 2], pa.int64())}), tmp_path / "w.parquet")
    with pytest.raises(ShardError, match="column 'content' has type int64, expected string or binary"):
        list(read_shard(str(tmp_path / "w.parquet")))
    (tmp_path / "x.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ShardError, match="not a readable Parquet file"):
        list(read_shard(str(tmp_path / "x.parquet")))
    with pytest.raises(ShardError, match="cannot open"):
        list(read_shard(str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match="unknown shard format"):
        list(read_shard(str(tmp_path / "notes.txt")))


def test_list_shards_is_sorted_and_filtered(tmp_path):
    for name in ("b/2.jsonl", "a/1.parquet", "a/readme.md", "c.jsonl.zst"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    got = list_shards(str(tmp_path))
    assert [g[len(str(tmp_path)) + 1 :] for g in got] == ["a/1.parquet", "b/2.jsonl", "c.jsonl.zst"]
    assert list_shards(str(tmp_path / "c.jsonl.zst")) == [str(tmp_path / "c.jsonl.zst")]
    with pytest.raises(FileNotFoundError):
        list_shards(str(tmp_path / "nope"))


def test_redaction():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    text = f"s3://AKIAIOSFODNN7EXAMPLE:{secret}@bucket/x aws_secret_access_key={secret} token: abc123 endpoint_url=http://127.0.0.1:9000"
    out = redact(text)
    assert secret not in out and "AKIAIOSFODNN7EXAMPLE" not in out and "abc123" not in out
    assert "endpoint_url=http://127.0.0.1:9000" in out
    assert redact("plain text", secrets=("plain",)) == "*** text"
