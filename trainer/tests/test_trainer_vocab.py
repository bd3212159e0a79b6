"""The paper-compatible vocabulary (EvaByte ids, BOS/EOS frames) and the legacy layout."""

from __future__ import annotations

import numpy as np
import pytest

from proxytrain import Layout, View, Vocab


def test_evabyte_layout_matches_the_papers_tokenizer():
    v = Vocab()
    assert (v.pad, v.bos, v.eos, v.raw_open, v.raw_close, v.cmp_open, v.cmp_close) == (0, 1, 2, 12, 13, 14, 15)
    assert v.size == 64 + 256 + 65536 and v.byte_offset == 64 and v.symbol_offset == 320
    # the paper prompts a model with [BOS, <raw>, bytes...]
    assert v.sample((View.RAW,), b"\x00\xff", np.array([], np.uint16)).tolist() == [1, 12, 64, 319, 13, 2]
    assert v.sample((View.CMP,), None, np.array([0, 65535])).tolist() == [1, 14, 320, 320 + 65535, 15, 2]
    # a translation pair shares one frame
    pair = v.sample((View.CMP, View.RAW), b"a", np.array([7]))
    assert pair.tolist() == [1, 14, 327, 15, 12, 64 + ord("a"), 13, 2]


def test_legacy_layout_is_kept_as_an_option():
    v = Vocab(layout=Layout.PROXYCOMP_V1)
    assert v.sample((View.RAW,), b"\x00\xff", np.array([], np.uint16)).tolist() == [3, 64, 319, 4]
    assert v.sample((View.CMP,), None, np.array([0])).tolist() == [5, 320, 6]


@pytest.mark.parametrize("layout", list(Layout))
@pytest.mark.parametrize("views", [(View.RAW,), (View.CMP,), (View.RAW, View.CMP), (View.CMP, View.RAW)])
def test_sample_length_agrees_with_sample(layout, views):
    v = Vocab(layout=layout)
    raw, sym = b"hello world", np.arange(4)
    assert v.sample_length(views, len(raw), len(sym)) == len(v.sample(views, raw, sym))


def test_describe_and_bad_n_special():
    v = Vocab()
    assert [v.describe(t) for t in (1, 12, 15, 20, 64 + 65, 320 + 9)] == [
        "<bos>", "<raw>", "</cmp>", "<special20>", "byte 65", "symbol 9"]
    with pytest.raises(ValueError, match="n_special must exceed"):
        Vocab(n_special=8)
