"""The calibration sample stands for the whole input: a first shard full of odd documents
(minified JavaScript, whitespace runs, random bytes) no longer sets the thresholds for
the corpus. Entropies from the shipped model, in process (the Ray path, where shards are
read by tasks and every model actor takes a part, runs in the pipeline tests)."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from compressor_model.config import EngineConfig, Precision, SegmentConfig
from compressor_model.engine import NeuralCompressor
from compressor_model.segment import calibrate_thresholds
from compressor_model.stdlib import stdlib_files, take_bytes
from pipeline.job.calibration import calibrate_in_process, deal, undeal
from pipeline.job.plan import plan_tasks
from pipeline.commands.demo import write_shards
from tests.pipeline_fixtures import job_config


def odd_documents(n_bytes: int) -> list[str]:
    rng = random.Random(7)
    names = ["a", "b", "c", "e", "t", "n", "r", "o", "i", "s"]
    out, total = [], 0
    while total < n_bytes:
        kind = len(out) % 3
        if kind == 0:  # one-line minified JavaScript
            doc = ";".join(f"var {rng.choice(names)}{rng.randrange(99)}=function({rng.choice(names)}){{return "
                           f"{rng.choice(names)}*{rng.randrange(9)}+{rng.choice(names)}}}" for _ in range(120))
        elif kind == 1:  # whitespace runs
            doc = "".join(" " * rng.randrange(1, 400) + "\t" * rng.randrange(0, 3) + "\n" * rng.randrange(0, 2)
                          for _ in range(40))
        else:  # random bytes (as text)
            doc = "".join(chr(rng.randrange(33, 0x2FF)) for _ in range(4000))
        out.append(doc)
        total += len(doc.encode())
    return out


@pytest.fixture(scope="module")
def shipped():
    return NeuralCompressor.load(None, EngineConfig(precision=Precision.FP32), SegmentConfig())


def test_an_odd_first_shard_does_not_set_the_thresholds(tmp_path, shipped):
    clean = take_bytes([f for f in stdlib_files("heldout") if 1000 < len(f.text) < 20_000], 500_000)
    n_clean, share = 47, 400
    write_shards(clean, tmp_path / "in", n_clean, "jsonl")
    odd = [json.dumps({"content": d}) for d in odd_documents(60_000)]
    (tmp_path / "in" / "a-odd.jsonl").write_text("\n".join(odd) + "\n")  # first in listing order

    memo: dict[bytes, object] = {}

    def entropies(docs):
        todo = [d for d in dict.fromkeys(docs) if d not in memo]
        memo.update(zip(todo, shipped.entropies(todo)))
        return [memo[d] for d in docs]

    def calibrate(tasks):  # the same share per shard, so both samples take the same clean documents
        cfg = job_config(str(tmp_path / "in"), str(tmp_path / "out"), "", f"calibration.bytes={share * len(tasks)}")
        return calibrate_in_process(tasks, cfg, entropies, shipped.fingerprint)

    tasks = plan_tasks(job_config(str(tmp_path / "in"), str(tmp_path / "out"), ""))
    assert tasks[0].name == "a-odd" and len(tasks) == n_clean + 1
    t = time.perf_counter()
    mixed = calibrate(tasks)
    only_clean = calibrate(tasks[1:])
    # What calibration did before: the first calibration_bytes in listing order, all odd.
    first = calibrate_thresholds(entropies([d.encode()[:4000] for d in odd[:3]]), 95.0, "")
    took = time.perf_counter() - t

    assert len(mixed.sample_shards) == n_clean + 1 and mixed.sample_bytes <= share * (n_clean + 1)
    assert mixed.sample_bytes > 0.9 * share * (n_clean + 1) and mixed.sample_docs >= n_clean + 1 and mixed.sample_seconds > 0
    print(f"\nthresholds (abs, jump): clean shards only {only_clean.theta_abs:.3f} {only_clean.theta_jump:.3f}; "
          f"with the odd shard first {mixed.theta_abs:.3f} {mixed.theta_jump:.3f}; the first bytes in listing order "
          f"{first.theta_abs:.3f} {first.theta_jump:.3f}; {took:.1f} s")
    assert abs(mixed.theta_abs - only_clean.theta_abs) < 0.1 * only_clean.theta_abs
    assert abs(mixed.theta_jump - only_clean.theta_jump) < 0.1 * only_clean.theta_jump
    # ...where a sample of the first shard alone is far off (the failure this guards against).
    off = max(abs(first.theta_abs / only_clean.theta_abs - 1), abs(first.theta_jump / only_clean.theta_jump - 1))
    assert off > 0.3

    again = calibrate(list(reversed(tasks)))  # listing order does not matter
    assert (again.theta_abs, again.theta_jump, again.sample_shards) == (mixed.theta_abs, mixed.theta_jump, mixed.sample_shards)


def test_the_sample_is_dealt_to_actors_and_put_back_in_order():
    docs = [bytes([i]) * (i + 1) for i in range(11)]
    for n in (1, 2, 3, 11, 12):
        parts = deal(docs, n)
        assert len(parts) == n and max(map(len, parts)) - min(map(len, parts)) <= 1
        back = undeal([[np.frombuffer(d, np.uint8) for d in p] for p in parts])  # as entropies come back
        assert [h.tobytes() for h in back] == docs
