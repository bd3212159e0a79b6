"""Real inputs (stdlib source shards), a tiny checkpoint and job configs for pipeline tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from compressor_model.stdlib import stdlib_files, take_bytes
from pipeline.config import load_config
from pipeline.commands.demo import write_shards
from tests.engine_fixtures import tiny_model


def tiny_checkpoint(path: Path, model=None) -> str:
    torch.save((model or tiny_model()).to_checkpoint(), path)
    return str(path)


def make_input(root: Path, n_shards: int = 3, max_bytes: int = 24_000, fmt: str = "jsonl.zst") -> list[Path]:
    files = take_bytes([f for f in stdlib_files("heldout") if len(f.text) < 6000], max_bytes)
    return write_shards(files, root, n_shards, fmt)


# Small, fast settings for tests on 2 cores (as a user's YAML file would hold them).
FAST = {"run": {"address": "local", "progress": False, "torch_threads": 1, "batch_bytes": 8000, "shard_workers": 2,
                "metrics": False},
        "calibration": {"bytes": 20000},
        "engine": {"lanes": 64, "group": 32, "compile": False}, "segment": {"call_positions": 512}, "cache": {"shards": 2}}


def job_config(inp: str, out: str, ckpt: str, *extra: str, storage_options: dict | None = None):
    overrides = [
        f"input={json.dumps(inp)}", f"output={json.dumps(out)}", f"model.checkpoint={json.dumps(ckpt)}",
        *(f"{section}.{k}={json.dumps(v)}" for section, d in FAST.items() for k, v in d.items()),
        *extra,
    ]
    if storage_options:
        overrides.append(f"storage_options={json.dumps(storage_options)}")
    return load_config(None, overrides)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
