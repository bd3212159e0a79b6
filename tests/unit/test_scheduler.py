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
