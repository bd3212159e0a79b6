"""The paper's compressor analyses as commands: each runs on real code (this Python's
standard library), gives the same result for the same seed, and writes its JSON and
picture. The model is the tests' tiny one (the figures with the model model are in the
closing notes and docs/method.md); what is checked here holds for any model."""

from __future__ import annotations

import json

import pytest

from compressor_model.config import EngineConfig, Precision, SegmentConfig
from compressor_model.engine import NeuralCompressor
from compressor_model.stdlib import stdlib_files, take_bytes
from pipeline.analysis.analyses import Analysis, AnalysisConfig, analyze
from pipeline.cli import main as cli
from pipeline.analysis.plots import PLOTS
from pipeline.commands.demo import write_shards
from tests.engine_fixtures import tiny_compressor
from tests.pipeline_fixtures import tiny_checkpoint

CFG = AnalysisConfig(sample_bytes=6000, doc_bytes=1500, tokenizer_train_bytes=200_000)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_shards(take_bytes(stdlib_files("heldout"), 40_000), root / "in", 4, "jsonl")
    return str(root / "in")


@pytest.fixture(scope="module")
def model():  # the name the tests use; a tiny model keeps each analysis to seconds on a CPU
    return tiny_compressor(lanes=64, group=32)


def without_timings(x):
    if isinstance(x, dict):
        return {k: without_timings(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [without_timings(v) for v in x]
    return x


def test_ablations_table6(corpus, model):
    r = analyze(Analysis.ABLATIONS, corpus, CFG, comp=model)
    rows = {(x["segmenter"], x["window_bits"], x["symbol_bits"]): x for x in r["rows"]}
    assert len(r["rows"]) == 9 and r["sample_bytes"] == r["bytes"] > 3000
    for x in r["rows"]:
        assert set(x) >= {"segmenter", "window_bits", "symbol_bits", "bytes_per_symbol", "paper_bytes_per_symbol"}
        assert x["bytes_per_symbol"] > 0.1
        if x["window_bits"] is None:
            assert x["decoded_segments"] > 0  # the no-window codes decode back with the model
    e98 = rows[("entropy-98", 16, 16)]["bytes_per_symbol"], rows[("entropy-98", 16, 8)]["bytes_per_symbol"]
    assert e98[0] == pytest.approx(2 * e98[1])  # a 16-bit window is two 8-bit symbols
    assert rows[("fixed-4", None, 8)]["segments"] > rows[("fixed-8", None, 8)]["segments"] > rows[("fixed-16", None, 8)]["segments"]
    again = analyze(Analysis.ABLATIONS, corpus, CFG, comp=model)
    assert without_timings(again) == without_timings(r)
    assert PLOTS["ablations"](r).startswith(PNG)


def test_stability_orders_the_three_compressors(corpus, model):
    r = analyze(Analysis.STABILITY, corpus, CFG, comp=model)
    for name in ("neural", "tokenizer", "gzip"):
        assert 0 < r[name]["mean_distance"] <= 1 and len(r[name]["distances"]) == r["documents"]
    assert r["most_to_least_stable"][-1] == "gzip"  # gzip is the least stable, as in the paper
    assert r["tokenizer"]["mean_distance"] < r["gzip"]["mean_distance"]
    assert analyze(Analysis.STABILITY, corpus, CFG, comp=model) == r  # seeded
    other = analyze(Analysis.STABILITY, corpus, AnalysisConfig(**{**CFG.__dict__, "seed": 1}), comp=model)
    assert other["neural"]["distances"] != r["neural"]["distances"]


def test_collisions_and_segments(corpus, model):
    # Collisions need a model that has learnt something: the shipped one (a random one
    # gives every chunk its own code).
    shipped = NeuralCompressor.load(None, EngineConfig(precision=Precision.FP32), SegmentConfig())
    c = analyze(Analysis.COLLISIONS, corpus, AnalysisConfig(sample_bytes=3000, doc_bytes=1500), comp=shipped)
    assert c["segments"] >= c["segments_in_collisions"] >= 2 * c["collision_clusters"]
    assert c["collision_clusters"] > 0 and 0 <= c["lcp_ratio_above_0_8"] <= 1 and 0 <= c["lcp_ratio_above_0_8_pairs"] <= 1
    assert c["colliding_pairs"] >= c["collision_clusters"]
    for cluster in c["largest"]:
        assert cluster["variants"] >= 2 and len(set(cluster["examples"])) == len(cluster["examples"])
    s = analyze(Analysis.SEGMENTS, corpus, CFG, comp=model)
    assert sum(s["histograms"]["segment_bytes"]["counts"]) == s["segments"]
    assert sum(s["histograms"]["bytes_per_window"]["counts"]) == s["windows"]
    assert sum(s["histograms"]["entropy_bits"]["counts"]) == s["bytes"] == s["sample_bytes"]
    for kind, result in (("collisions", c), ("segments", s)):
        assert PLOTS[kind](result).startswith(PNG)


def test_analyze_command_writes_json_and_png(corpus, tmp_path, capsys, monkeypatch):
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)
    rc = cli(["analyze", "segments", "--input", corpus, "--dest", "here", "--sample-bytes", "3000",
              "--checkpoint", ckpt, "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert json.loads((tmp_path / "here" / "segments.json").read_text()) == printed
    assert (tmp_path / "here" / "segments.png").read_bytes().startswith(PNG)
    # A relative --dest (the default is ./analysis) is announced as the absolute path.
    assert f"wrote {tmp_path / 'here' / 'segments.json'} and {tmp_path / 'here' / 'segments.png'}" in captured.err


def test_the_report_page_shows_rejects_and_failures_with_their_reasons():
    """What an operator looks for first: which documents and shards did not make it, and why."""
    from pipeline.analysis.report import render

    g = {"output": "s3://b/out", "compressor": "neural", "generated": "now",
         "counts": {"total": 2, "done": 1, "failed": 1, "pending": 0},
         "totals": {"rows": 3, "rejects": 1, "bytes_in": 900, "symbols_out": 200},
         "shards": [{"name": "part-00000", "rows": 3, "rejects": 1, "bytes_in": 900, "symbols_out": 200,
                     "bytes_per_symbol": 4.5, "cache_hit_rate": 0.0, "finished_at": 1.0}],
         "rejected": [{"shard": "part-00000", "row": 7, "id": "a.py", "reason": "not valid UTF-8 at byte 12"}],
         "failed": {"part-00001": "part-00001.jsonl: row 4: not JSON (Expecting value)"},
         "runs": [], "thresholds": {"theta_abs": 2.5, "theta_jump": 1.0, "sample_shards": ["part-00000"]}}
    page = render(g, {}, {})
    assert "not valid UTF-8 at byte 12" in page and "row 4: not JSON (Expecting value)" in page
    assert "<td class='t'>theta abs</td>" in page and "<pre>" not in page
