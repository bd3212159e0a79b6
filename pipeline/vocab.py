"""The shared vocabulary a trainer sees (docs/format.md, "Trainer vocabulary").

    [0, n_special)                      special ids: PAD, BOS, EOS, the four sentinels, reserved
    [n_special, n_special + 256)        raw byte values
    [n_special + 256, size)             compressed symbols (65,536 for b = 16)

A raw view of a document is `<raw> bytes </raw>`, a compressed view `<cmp> symbols </cmp>`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD, BOS, EOS, RAW_OPEN, RAW_CLOSE, CMP_OPEN, CMP_CLOSE = range(7)
SPECIAL_NAMES = ("<pad>", "<bos>", "<eos>", "<raw>", "</raw>", "<cmp>", "</cmp>")


@dataclass(frozen=True)
class Vocab:
    n_symbols: int = 1 << 16
    n_special: int = 64

    def __post_init__(self):
        if self.n_special < len(SPECIAL_NAMES):
            raise ValueError(f"n_special must be at least {len(SPECIAL_NAMES)}")

    @property
    def byte_offset(self) -> int:
        return self.n_special

    @property
    def symbol_offset(self) -> int:
        return self.n_special + 256

    @property
    def size(self) -> int:
        return self.n_special + 256 + self.n_symbols

    def raw(self, data: bytes) -> np.ndarray:
        out = np.empty(len(data) + 2, np.int64)
        out[0], out[-1] = RAW_OPEN, RAW_CLOSE
        out[1:-1] = np.frombuffer(data, np.uint8).astype(np.int64) + self.byte_offset
        return out

    def compressed(self, symbols: np.ndarray) -> np.ndarray:
        out = np.empty(len(symbols) + 2, np.int64)
        out[0], out[-1] = CMP_OPEN, CMP_CLOSE
        out[1:-1] = np.asarray(symbols, np.int64) + self.symbol_offset
        return out

    def describe(self, token: int) -> str:
        if token < len(SPECIAL_NAMES):
            return SPECIAL_NAMES[token]
        if token < self.n_special:
            return f"<special{token}>"
        if token < self.symbol_offset:
            return f"byte {token - self.byte_offset}"
        return f"symbol {token - self.symbol_offset}"
