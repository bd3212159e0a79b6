"""How the scheduler tells a lost process from a shard's own error."""

from __future__ import annotations

import ray.exceptions as rex

from pipeline.job.scheduler import Failure, classify, last_frame


class Wrapped(Exception):
    """As a shard task's error reaches the driver: the original under `cause`."""

    def __init__(self, cause):
        super().__init__(f"task failed:\n{cause}")
        self.cause = cause


def test_lost_processes_are_system_failures_and_errors_of_the_shard_are_not():
    assert classify(rex.WorkerCrashedError()) is Failure.SYSTEM
    assert classify(Wrapped(rex.ActorDiedError())) is Failure.SYSTEM  # the task's ray.get of a dead model actor
    assert classify(rex.NodeDiedError("node gone")) is Failure.SYSTEM
    for e in (ValueError("bug"), Wrapped(OSError("store down")), Wrapped(KeyError("k")), rex.GetTimeoutError("slow")):
        assert classify(e) is Failure.TASK, e


def test_a_failure_names_where_it_was_raised():
    text = ('Traceback (most recent call last):\n  File "/ray/_private/worker.py", line 900, in main_loop\n'
            '  File "/srv/app/pipeline/job/stages.py", line 97, in __call__\n    raise ValueError("x")\nValueError: x')
    assert last_frame(Exception(text)) == "pipeline/job/stages.py:97 in __call__"
    assert last_frame(Exception("no traceback")) == ""


def test_a_drain_waits_out_its_grace_and_a_second_request_abandons():
    from pipeline.job.scheduler import Drain

    now = [0.0]
    d = Drain(30.0, clock=lambda: now[0])
    assert not d.requested and not d.give_up()
    d.request()
    now[0] = 29.0
    assert d.requested and not d.give_up()
    now[0] = 30.0
    assert d.give_up()
    d2 = Drain(30.0, clock=lambda: now[0])
    d2.request()
    d2.request()
    assert d2.give_up()


def test_a_straggler_is_the_oldest_undoubled_task_past_the_median_limit(monkeypatch):
    import pipeline.job.scheduler as sched
    from pipeline.job.plan import ShardTask
    from pipeline.job.scheduler import Attempt, _straggler

    monkeypatch.setattr(sched.time, "monotonic", lambda: 100.0)
    a = Attempt([ShardTask(0, "in/a", "a", 1)], 0, 0, 1, t0=10.0)  # 90 s
    b = Attempt([ShardTask(1, "in/b", "b", 1)], 0, 0, 2, t0=40.0)  # 60 s
    c = Attempt([ShardTask(2, "in/c", "c", 1)], 0, 0, 3, t0=95.0)  # 5 s
    took = [10.0, 20.0, 30.0]  # median 20 s
    assert _straggler({1: a, 2: b, 3: c}, took, factor=2.0, min_s=0) is a
    assert _straggler({2: b, 3: c}, took, factor=2.0, min_s=0) is b
    assert _straggler({2: b, 3: c}, took, factor=2.0, min_s=61) is None  # not long enough yet
    assert _straggler({2: b, 3: c}, took, factor=4.0, min_s=0) is None  # 60 s < 4 x 20 s
    dup = Attempt(a.group, 0, 0, 4, t0=99.0)
    assert _straggler({1: a, 4: dup, 3: c}, took, factor=2.0, min_s=0) is None  # a has its duplicate already
    assert _straggler({1: a}, [], factor=2.0, min_s=0) is None  # nothing finished to compare with
    assert _straggler({1: a}, took, factor=0, min_s=0) is None  # off


def test_an_attempt_that_may_not_commit_leaves_nothing(tmp_path):
    """The duplicate of a straggler that finishes second: claim() says no before its
    first output is published, and the shard's files are discarded (nothing under the
    output, nothing left in _tmp); the attempt that may commit writes the output."""
    import pytest

    from compressor_model.stdlib import stdlib_files, take_bytes
    from pipeline.backends.registry import make_backend
    from pipeline.commands.demo import write_shards
    from pipeline.config import load_config
    from pipeline.job.plan import ShardTask
    from pipeline.job.shard import Superseded, process_shards
    from pipeline.store.parquet import OutputMeta

    paths = write_shards(take_bytes(list(stdlib_files("heldout")), 30_000), tmp_path / "in", 2, "jsonl.zst")
    out = tmp_path / "out"
    cfg = load_config(None, ["model.compressor=gzip", f"input={str(tmp_path / 'in')!r}", f"output={str(out)!r}", "run.batch_bytes=4000"])
    backend = make_backend(cfg, None)
    tasks = [ShardTask(i, str(p), f"s{i}", p.stat().st_size) for i, p in enumerate(paths)]
    meta = OutputMeta.of(backend.info)
    asked = []
    with pytest.raises(Superseded):
        process_shards(tasks, cfg, backend, None, None, meta, claim=lambda: asked.append(1) or False)
    assert asked and not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))
    got = process_shards(tasks, cfg, backend, None, None, meta, claim=lambda: True)
    assert [r.status for _, r in got] == ["done", "done"] and len(list((out / "shards").glob("*.parquet"))) == 2
