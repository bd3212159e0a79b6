"""The training CLI: reads shards, resumes after an interruption exactly, writes a
loadable checkpoint with its fingerprint and held-out bits/byte."""

from __future__ import annotations

import json

import torch

from compressor_model.engine import EngineConfig, NeuralCompressor
from compressor_model.model import load_checkpoint
from compressor_model.train import main as train_main
from tests.pipeline_fixtures import make_input


def _args(data, heldout, out, steps, *extra):
    return [*extra, "--data", str(data), "--heldout", str(heldout), "--model", "tiny", "--steps", str(steps),
            "--batch-size", "4", "--seq-len", "64", "--warmup", "2", "--eval-every", "100", "--eval-batches", "2",
            "--ckpt-every", "2", "--threads", "1", "--out", str(out), "--precision", "fp32"]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    make_input(tmp_path / "data", n_shards=2, max_bytes=20_000, fmt="parquet")
    make_input(tmp_path / "heldout", n_shards=1, max_bytes=5_000)
    train_main(_args(tmp_path / "data", tmp_path / "heldout", tmp_path / "straight", 6))
    # Interrupted after step 3 with only the checkpoint left, then the same command again.
    train_main(_args(tmp_path / "data", tmp_path / "heldout", tmp_path / "resumed", 6, "--stop-after", "3"))
    assert not (tmp_path / "resumed" / "model.pt").exists()
    assert load_checkpoint(tmp_path / "resumed" / "state.pt")["step"] == 3
    train_main(_args(tmp_path / "data", tmp_path / "heldout", tmp_path / "resumed", 6))

    a = load_checkpoint(tmp_path / "straight" / "model.pt")
    b = load_checkpoint(tmp_path / "resumed" / "model.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["fingerprint"] == b["fingerprint"]
    result = json.loads((tmp_path / "straight" / "result.json").read_text())
    assert result["steps"] == 6 and 0 < result["heldout_bits_per_byte"] < 9
    comp = NeuralCompressor.load(tmp_path / "straight" / "model.pt", EngineConfig(compile=False))
    assert comp.float_fingerprint == a["fingerprint"] and comp.training_info["steps"] == 6
    assert a["int8"]["digest"] == b["int8"]["digest"] == comp.int_model.digest()  # stored by training

