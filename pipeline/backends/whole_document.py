"""Proxy compressors other than the neural one: same pipeline, same schema.

* gzip: `gzip.compress(data, mtime=0)` bytes are the symbols (256 of them).
* tokenizer: BPE token ids from the `tokenizers` library are the symbols; the tokenizer
  comes from a tokenizer.json (`model.tokenizer`) or from `proxycomp train-tokenizer`.

They need no model and no GPU, so they run inside the shard tasks. Both are a
`backends.base.Backend`.
"""

from __future__ import annotations

import gzip
import hashlib
import fsspec
import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from compressor_model.records import Counts, DocRecord

from ..config import JobConfig
from ..errors import SettingsError
from ..store.parquet import BackendInfo, StoredRows


def _record(n_bytes: int, symbols: np.ndarray) -> DocRecord:
    z = np.zeros(1, np.int64)
    return DocRecord(
        n_bytes=n_bytes, seg_off=np.array([0, n_bytes], np.int64), win_off=np.zeros(2, np.int64),
        window_counts=np.zeros(0, np.int32), window_codes=np.zeros(0, np.uint32),
        sym_off=np.concatenate([z, [len(symbols)]]).astype(np.int64), symbols=symbols,
    )


class _WholeDocument:
    """Base: one segment per document, symbols from `encode`, no cache."""

    symbol_type = pa.uint16()

    def segment(self, docs, thresholds):
        return [np.array([0, len(d)], np.int64) for d in docs], Counts()

    def compress(self, docs, offs, cache):
        records = [_record(len(d), self.encode(d)) for d in docs]
        st = Counts(docs_out=len(docs), bytes_in=sum(map(len, docs)), segments=len(docs), unique_segments=len(docs),
                    coded_bytes=sum(map(len, docs)), symbols_out=sum(len(r.symbols) for r in records))
        return records, st

    def maxrss(self) -> int:
        return 0

    def decode(self, rows: StoredRows) -> list[bytes | None]:
        return [self.decode_symbols(rows.get("symbols", i)) for i in range(len(rows))]

    def encode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def decode_symbols(self, symbols: np.ndarray) -> bytes:
        raise NotImplementedError


class GzipBackend(_WholeDocument):
    def __init__(self, cfg: JobConfig):
        self.info = BackendInfo("gzip", namespace="gzip-mtime0-level9", fingerprint="gzip", numerics="exact",
                                n_symbols=256)

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(gzip.compress(data, mtime=0), np.uint8).astype(np.uint16)

    def decode_symbols(self, symbols: np.ndarray) -> bytes:
        return gzip.decompress(np.asarray(symbols, np.uint8).tobytes())


class TokenizerBackend(_WholeDocument):
    symbol_type = pa.uint32()

    def __init__(self, cfg: JobConfig):
        if not cfg.model.tokenizer:
            raise SettingsError("the tokenizer compressor needs model.tokenizer (a tokenizer.json URL); "
                             "make one with `proxycomp train-tokenizer`")
        with fsspec.open(cfg.model.tokenizer, "rb", **cfg.storage_options) as f:
            raw = f.read()
        self.tok = Tokenizer.from_str(raw.decode())
        digest = hashlib.sha256(raw).hexdigest()[:16]
        self.info = BackendInfo("tokenizer", namespace=f"tokenizer-{digest}", fingerprint=digest, numerics="exact",
                                n_symbols=self.tok.get_vocab_size())

    def encode(self, data: bytes) -> np.ndarray:
        return np.asarray(self.tok.encode(data.decode("utf-8"), add_special_tokens=False).ids, np.uint32)

    def decode_symbols(self, symbols: np.ndarray) -> bytes:
        return self.tok.decode([int(s) for s in symbols], skip_special_tokens=False).encode("utf-8")


def train_tokenizer(texts, vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE tokenizer (lossless on any UTF-8 text) trained on `texts`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
                                  show_progress=False)  # its bars print blank lines into logs
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
