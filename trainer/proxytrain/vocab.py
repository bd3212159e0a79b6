"""The token ids a trainer sees, and how one sample's views become tokens.

    [0, n_special)                   special ids (layout below)
    [n_special, n_special + 256)     raw byte values
    [n_special + 256, size)          compressed symbols (65,536 for b = 16)

Layout.EVABYTE (the default) is the paper's: its EvaByte tokenizer puts bytes after 64
special ids, compressed symbols after those ("separate embedding"), wraps a raw view in
<extra_id_12> ... <extra_id_13> (ids 12, 13) and a compressed view in ids 14, 15, and
frames every sample with BOS 1 and EOS 2; a translation pair is both views inside one
frame. A model trained on it can be prompted with the paper's tools, `[1, 12, bytes...]`.

Layout.PROXYCOMP_V1 is what proxycomp's loader produced before: sentinels 3-6, no frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np


class Layout(Enum):
    EVABYTE = "evabyte"
    PROXYCOMP_V1 = "proxycomp-v1"


class View(Enum):
    RAW = "raw"
    CMP = "cmp"


# (pad, bos, eos, raw open, raw close, cmp open, cmp close, frame each sample)
_IDS = {
    Layout.EVABYTE: (0, 1, 2, 12, 13, 14, 15, True),
    Layout.PROXYCOMP_V1: (0, 1, 2, 3, 4, 5, 6, False),
}


@dataclass(frozen=True)
class Vocab:
    n_symbols: int = 1 << 16
    layout: Layout = Layout.EVABYTE
    n_special: int = 64

    def __post_init__(self):
        if self.n_special <= max(_IDS[self.layout][:7]):
            raise ValueError(f"n_special must exceed the {self.layout.value} layout's special ids "
                             f"(at least {max(_IDS[self.layout][:7]) + 1})")

    @property
    def pad(self) -> int:
        return _IDS[self.layout][0]

    @property
    def bos(self) -> int:
        return _IDS[self.layout][1]

    @property
    def eos(self) -> int:
        return _IDS[self.layout][2]

    @property
    def raw_open(self) -> int:
        return _IDS[self.layout][3]

    @property
    def raw_close(self) -> int:
        return _IDS[self.layout][4]

    @property
    def cmp_open(self) -> int:
        return _IDS[self.layout][5]

    @property
    def cmp_close(self) -> int:
        return _IDS[self.layout][6]

    @property
    def framed(self) -> bool:
        return _IDS[self.layout][7]

    @property
    def byte_offset(self) -> int:
        return self.n_special

    @property
    def symbol_offset(self) -> int:
        return self.n_special + 256

    @property
    def size(self) -> int:
        return self.n_special + 256 + self.n_symbols

    def sample_length(self, views: Sequence[View], n_bytes: int, n_symbols: int) -> int:
        """Tokens of one sample, from the row's lengths alone (planning reads no payload)."""
        body = sum((n_bytes if v is View.RAW else n_symbols) + 2 for v in views)
        return body + (2 if self.framed else 0)

    def sample(self, views: Sequence[View], raw: bytes | None, symbols: np.ndarray) -> np.ndarray:
        """[BOS] <view> ... [EOS] as int64 ids; raw is needed only if a raw view is drawn."""
        parts = [np.array([self.bos], np.int64)] if self.framed else []
        for v in views:
            if v is View.RAW:
                body = np.frombuffer(raw, np.uint8).astype(np.int64) + self.byte_offset
                parts += [np.array([self.raw_open], np.int64), body, np.array([self.raw_close], np.int64)]
            else:
                body = np.asarray(symbols, np.int64) + self.symbol_offset
                parts += [np.array([self.cmp_open], np.int64), body, np.array([self.cmp_close], np.int64)]
        if self.framed:
            parts.append(np.array([self.eos], np.int64))
        return np.concatenate(parts)

    def describe(self, token: int) -> str:
        names = {self.pad: "<pad>", self.bos: "<bos>", self.eos: "<eos>", self.raw_open: "<raw>",
                 self.raw_close: "</raw>", self.cmp_open: "<cmp>", self.cmp_close: "</cmp>"}
        if token in names:
            return names[token]
        if token < self.n_special:
            return f"<special{token}>"
        if token < self.symbol_offset:
            return f"byte {token - self.byte_offset}"
        return f"symbol {token - self.symbol_offset}"
