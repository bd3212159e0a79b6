"""lingua-jsonl export: exact bytes against a golden file, and an independent decode."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.config import load_config, to_dict
from pipeline.commands.export import LinguaExport, export_lingua, pack9, unpack9, window_bytes
from pipeline.store.parquet import OutputMeta, OutRow, rows_to_table, schema

GOLDEN = Path(__file__).parents[1] / "golden" / "lingua_v1.jsonl"
DOCS = [("héllo = 1\n", [0x0102, 0xFFFF, 0x0000]), ("x\n", [0xABCD]), ("", [])]


def reference_pack(values):
    """9-bit values, lowest bits first, as a byte string: written from the format's
    description, one bit at a time."""
    bits = []
    for v in values:
        bits += [(v >> i) & 1 for i in range(9)]
    bits += [0] * (-len(bits) % 8)
    return bytes(sum(bits[k + i] << i for i in range(8)) for k in range(0, len(bits), 8))


def make_output(root: Path, docs=DOCS, window_bits: int = 16, escapes: bool = False) -> str:
    cfg = load_config(None, [f"input={json.dumps(str(root / 'in'))}", f"output={json.dumps(str(root / 'out'))}"])
    (root / "in").mkdir(parents=True)
    (root / "in" / "part-00000.jsonl").write_text("")
    (root / "out" / "shards").mkdir(parents=True)
    (root / "out" / "_done").mkdir()
    (root / "out" / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    rows = []
    for i, (text, sym) in enumerate(docs):
        raw = text.encode()
        s = np.array(sym, np.uint16)
        wb = np.ones(len(s) * 16 // window_bits, np.uint16)
        if escapes and i == 1:
            wb[0] = 0
        rows.append(OutRow(f"d{i}", "x", i, raw, len(raw), s, np.array([0, len(raw)]), np.array([0, len(s)]),
                           np.array([0, len(wb)]), wb))
    meta = OutputMeta("neural", namespace="synthetic", fingerprint="", numerics="", n_symbols=65536,
                      coder={"window_bits": window_bits, "symbol_bits": 16, "max_window_bytes": 32})
    sch = schema().with_metadata(meta.key_value())
    pq.write_table(rows_to_table(rows, sch), root / "out" / "shards" / "part-00000.parquet")
    (root / "out" / "_done" / "part-00000.json").write_text(json.dumps({"rows": len(rows)}))
    return cfg


def test_pack9_matches_the_description():
    rng = np.random.default_rng(0)
    for n in range(0, 40):
        v = rng.integers(0, 512, n)
        assert pack9(v) == reference_pack(v.tolist())
        assert unpack9(pack9(v)).tolist() == v.tolist()
    with pytest.raises(ValueError):
        pack9(np.array([512]))


def test_window_bytes_are_big_endian_and_left_aligned():
    assert window_bytes(np.array([0x0102, 0xABCD]), 16).tolist() == [1, 2, 0xAB, 0xCD]
    assert window_bytes(np.array([0x12345678]), 32).tolist() == [0x12, 0x34, 0x56, 0x78]
    assert window_bytes(np.array([0xAB]), 8).tolist() == [0xAB]


def chunk_files(dest: Path, name: str = "proxycomp") -> list[Path]:
    return sorted((dest / name).glob("*chunk.*.jsonl"))


def decode_line(line: str, key: str = "m1_ac_ow16") -> tuple[str, list[int]]:
    """The format's description, independently: 9-bit values, 256 + byte, two bytes a symbol."""
    rec = json.loads(line)
    values = unpack9(base64.b64decode(rec[key])).tolist()
    assert all(v >= 256 for v in values)  # everything compressed
    return rec["text"], [(values[i] - 256) << 8 | (values[i + 1] - 256) for i in range(0, len(values), 2)]


def test_export_matches_golden_and_decodes(tmp_path):
    cfg = make_output(tmp_path)
    summary = export_lingua(cfg, LinguaExport(str(tmp_path / "lingua")), log=lambda m: None)
    files = chunk_files(tmp_path / "lingua")
    assert [f.name for f in files] == ["proxycomp.chunk.00.jsonl"] and summary["documents"] == 3
    got = files[0].read_text()
    # The lines' bytes are pinned; their order within a chunk is the seeded shuffle.
    assert sorted(got.splitlines()) == sorted(GOLDEN.read_text().splitlines())
    assert sorted(decode_line(line) for line in got.splitlines()) == sorted((t, list(s)) for t, s in DOCS)
    assert summary["trainer"]["data.compression_alg_config"] == "ac_m1_key-pack_16-m1_ac_ow16"
    with pytest.raises(ValueError, match="must contain ow16"):
        export_lingua(cfg, LinguaExport(str(tmp_path / "bad"), key="m1_ac_ow32"), log=lambda m: None)


def test_chunks_hold_every_document_once_shuffled_by_the_seed(tmp_path):
    rng = np.random.default_rng(1)
    docs = [(f"doc {i}\n" * (i % 5 + 1), rng.integers(0, 65536, i % 7 + 1).tolist()) for i in range(200)]
    cfg = make_output(tmp_path, docs)

    def export(chunks, seed, dest="lingua"):
        export_lingua(cfg, LinguaExport(str(tmp_path / dest), chunks=chunks, seed=seed), log=lambda m: None)
        return [[decode_line(line) for line in f.read_text().splitlines()] for f in chunk_files(tmp_path / dest)]

    four = export(4, 0)
    assert len(four) == 4 and all(35 < len(c) < 65 for c in four)
    flat = [d for c in four for d in c]
    assert sorted(flat) == sorted((t, list(s)) for t, s in docs)  # each document exactly once, decoded right
    assert [d[0] for d in flat[:20]] != [t for t, _ in docs[:20]]  # not input order
    assert export(4, 0, "again") == four and export(4, 1, "other") != four  # seeded
    export(2, 0)  # re-export with fewer chunks into the same place: no stale chunk files left
    assert [f.name for f in chunk_files(tmp_path / "lingua")] == ["proxycomp.chunk.00.jsonl", "proxycomp.chunk.01.jsonl"]
    meta = json.loads((tmp_path / "lingua" / "proxycomp" / "export.json").read_text())
    assert meta["chunks"] == 2 and sum(meta["docs_per_chunk"]) == 200


def test_settings_the_format_cannot_represent_are_refused(tmp_path):
    cfg = make_output(tmp_path / "w8", window_bits=8, escapes=True)
    with pytest.raises(ValueError, match=r"part-00000 row 1 \(input row 1\): W = 8 escape windows"):
        export_lingua(cfg, LinguaExport(str(tmp_path / "x"), key="m1_ac_ow8"), log=lambda m: None)
    cfg = make_output(tmp_path / "w8ok", window_bits=8)
    with pytest.raises(ValueError, match="W = 8 cannot be regrouped into 16-bit values"):
        export_lingua(cfg, LinguaExport(str(tmp_path / "y"), key="m1_ac_ow8", pack=16), log=lambda m: None)
    summary = export_lingua(cfg, LinguaExport(str(tmp_path / "z"), pack=8), log=lambda m: None)
    assert summary["trainer"]["data.compression_alg_config"] == "ac_m1_key-pack_8-m1_ac_ow8"
