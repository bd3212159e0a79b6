"""The hottest cache entries outlive a run: chosen by use, bounded, written as one blob
that reads back exactly, and refused whole when damaged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.config import CacheConfig
from cache.entry import pack_entry, segment_key, unpack_entry
from cache.persist import dump_entries, load_entries
from cache.sharded import CacheShard, ShardedCache


def entry(ns: str, seg: bytes):
    return segment_key(ns, seg), pack_entry(ns, len(seg), np.array([7], np.uint32), np.array([len(seg)], np.int32))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=16, max_size=16), st.binary(max_size=300), st.integers(0, 2**32 - 1)),
                max_size=40))
def test_entries_round_trip(items):
    assert load_entries(dump_entries(items)) == items


def test_a_damaged_file_is_refused_whole():
    data = dump_entries([entry("ns", b"abc") + (3,), entry("ns", b"defg") + (1,)])
    raw = load_entries(data)
    assert len(raw) == 2
    for bad in (b"", data[:-3], b"PCW1" + data, data + b"x"):
        with pytest.raises(ValueError):
            load_entries(bad)


def test_hottest_are_the_most_used_within_the_bound():
    c = CacheShard(max_bytes=1 << 20)
    items = [entry("ns", b"seg%d" % i) for i in range(10)]
    c.put_many(items)
    for i, (k, _) in enumerate(items):
        for _ in range(i % 4):  # segments 3 and 7 three times, 2 and 6 twice, ...
            c.get_many([k])
    size = len(items[0][0]) + len(items[0][1])
    hot = c.hottest(4 * size)
    assert [h for _, _, h in hot] == [3, 3, 2, 2]
    assert {k for k, _, _ in hot} == {items[i][0] for i in (3, 7, 2, 6)}
    assert hot[0][0] == items[7][0]  # among equals, the most recently used first
    everything = [h for _, _, h in c.hottest(1 << 20)]
    assert len(everything) == 10 and everything == sorted(everything, reverse=True)  # never-hit ones last


def test_kept_entries_warm_a_new_cache_and_keep_their_checks():
    old = ShardedCache([CacheShard(1 << 20) for _ in range(3)], CacheConfig(shards=3))
    items = [entry("ns", b"segment %d" % i) for i in range(50)]
    old.put_many(items)
    old.get_many([k for k, _ in items[:30]])
    blob = dump_entries(old.hottest(1 << 20))

    new = ShardedCache([CacheShard(1 << 20) for _ in range(2)], CacheConfig(shards=2))  # another shard count
    assert new.load(load_entries(blob)[:30]) == 30  # the 30 that were hit come first
    got = new.get_many([k for k, _ in items])
    assert got[:30] == [v for _, v in items[:30]] and got[30:] == [None] * 20
    assert unpack_entry("ns", len(b"segment 0"), got[0]) is not None
    assert unpack_entry("other-namespace", len(b"segment 0"), got[0]) is None  # foreign: recomputed, not trusted
    assert [h for _, _, h in new.hottest(1 << 20)] == [1] * 30  # one hit before, halved to 0, plus this lookup
