"""The heartbeat a job's log gets instead of progress bars."""

from __future__ import annotations

from pipeline.job.progress import Heartbeat
from pipeline.job.stages import ShardResult


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def done(name: str, nbytes: int, seg_time=1.0, code_time=2.0, hits=1, unique=4) -> ShardResult:
    return ShardResult(name, name, "done", bytes_in=nbytes, seg_time=seg_time, code_time=code_time, cache_hits=hits,
                       unique_segments=unique)


def test_without_a_terminal_one_line_per_interval_at_the_first_shard_and_at_the_end(capsys):
    clock, lines = Clock(), []
    beat = Heartbeat(10, 1, lines.append, show_bars=True, every_s=60, tty=False, clock=clock)
    for _ in range(200):  # the scheduler polls twice a second
        clock.t += 0.5
        beat.progress(0, 0, 2)
    assert len(lines) == 1  # 100 s: one interval
    clock.t += 1
    beat.progress(5000, 10_000, 2)
    beat.shard(done("a", 10_000), 2)  # the first shard says so at once
    assert len(lines) == 2
    assert lines[1].startswith("shards 1 done, 2 running, 0 failed, 9 left of 10 | ")
    assert "ETA 15m 09s" in lines[1] and "model busy 3%" in lines[1] and "cache hits 25.0%" in lines[1]
    clock.t += 30
    beat.shard(ShardResult("b", "b", "failed", reason="x"), 1)
    beat.progress(5000, 10_000, 1)
    assert len(lines) == 2  # not yet another interval
    beat.close()
    assert len(lines) == 3 and lines[2].startswith("shards 1 done, 0 running, 1 failed, 8 left of 10")
    assert capsys.readouterr().err == ""  # no bars


def test_on_a_terminal_bars_and_no_lines(capsys):
    lines = []
    beat = Heartbeat(2, 1, lines.append, show_bars=True, every_s=60, tty=True, clock=Clock())
    beat.progress(3, 300, 1)
    beat.shard(done("a", 300), 1)
    beat.close()
    assert lines == [] and "shards" in capsys.readouterr().err


def test_no_progress_and_no_heartbeat():
    lines = []
    beat = Heartbeat(2, 1, lines.append, show_bars=False, every_s=0, tty=True, clock=Clock())
    beat.shard(done("a", 300), 1)
    beat.close()
    assert lines == []


def test_a_shard_without_progress_for_the_timeout_is_stalled():
    from pipeline.job.progress import Progress

    clock = Clock()
    p = Progress(clock=clock)
    p.started(1, ("a",), 101)
    p.started(2, ("b", "c"), 102)
    clock.t += 50
    p.add(3, 300, 1)
    clock.t += 20
    assert p.stalled(60) == [2] and p.stalled(100) == []
    assert p.in_flight() == {"a": 101, "b": 102, "c": 102}
    p.finished(2)
    assert p.stalled(60) == [] and p.get() == (3, 300)


def test_only_one_attempt_of_a_group_commits_it():
    """A straggler and its duplicate: the first to commit owns the group; when the
    owner fails, the next attempt may."""
    from pipeline.job.progress import Progress

    p = Progress()
    assert p.claim("a", 1) and p.claim("a", 1) and not p.claim("a", 2)
    p.release("a", 2)  # not the owner: nothing changes
    assert not p.claim("a", 2)
    p.release("a", 1)
    assert p.claim("a", 2) and not p.claim("a", 1)
