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
from pipeline.export import export_lingua, pack9, unpack9, window_bytes
from pipeline.output import OutRow, file_metadata, rows_to_table, schema

GOLDEN = Path(__file__).parent / "golden" / "lingua_v1.jsonl"
DOCS = [("héllo = 1\n", [0x0102, 0xFFFF, 0x0000]), ("x\n", [0xABCD]), ("", [])]


def reference_pack(values):
    """9-bit values, lowest bits first, as a byte string: written from the format's
    description, one bit at a time."""
    bits = []
    for v in values:
        bits += [(v >> i) & 1 for i in range(9)]
    bits += [0] * (-len(bits) % 8)
    return bytes(sum(bits[k + i] << i for i in range(8)) for k in range(0, len(bits), 8))


def make_output(root: Path) -> str:
    cfg = load_config(None, [f"input={json.dumps(str(root / 'in'))}", f"output={json.dumps(str(root / 'out'))}"])
    (root / "in").mkdir(parents=True)
    (root / "in" / "part-00000.jsonl").write_text("")
    (root / "out" / "shards").mkdir(parents=True)
    (root / "out" / "_done").mkdir()
    (root / "out" / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    rows = []
    for i, (text, sym) in enumerate(DOCS):
        raw = text.encode()
        s = np.array(sym, np.uint16)
        rows.append(OutRow(f"d{i}", "x", i, raw, len(raw), s, np.array([0, len(raw)]), np.array([0, len(s)]),
                           np.array([0, len(s)]), np.ones(len(s), np.uint16)))
    meta = {"compressor": "neural", "coder": {"window_bits": 16, "symbol_bits": 16, "max_window_bytes": 32}}
    sch = schema().with_metadata(file_metadata(meta))
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


def test_export_matches_golden_and_decodes(tmp_path):
    cfg = make_output(tmp_path)
    written = export_lingua(cfg, str(tmp_path / "lingua"), log=lambda m: None)
    got = Path(written["part-00000"]["path"]).read_text()
    assert got == GOLDEN.read_text()
    for line, (text, sym) in zip(got.splitlines(), DOCS):
        rec = json.loads(line)
        assert rec["text"] == text
        values = unpack9(base64.b64decode(rec["m1_ac_ow16"])).tolist()
        assert all(v >= 256 for v in values)  # everything compressed
        pairs = [(values[i] - 256) << 8 | (values[i + 1] - 256) for i in range(0, len(values), 2)]
        assert pairs == sym
    with pytest.raises(ValueError, match="must contain ow16"):
        export_lingua(cfg, str(tmp_path / "bad"), key="m1_ac_ow32", log=lambda m: None)
