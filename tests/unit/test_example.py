"""The trainer example runs end to end on pipeline output and learns something."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from tests.dataset_fixtures import synthetic_output


def test_tiny_lm_example_trains(tmp_path):
    synthetic_output(tmp_path / "out", files=2, groups=2, docs_per_group=20)
    spec = importlib.util.spec_from_file_location("ex", Path(__file__).parents[2] / "examples" / "train_tiny_lm.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    losses = ex.main(["--data", str(tmp_path / "out"), "--steps", "12", "--seq-len", "64", "--batch-size", "2"])
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < losses[0]  # it learns
