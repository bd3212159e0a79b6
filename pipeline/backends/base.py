"""The seam between shard processing and a compressor. The neural backend talks to a
model actor; gzip and tokenizer run inside the shard task. The job, verify and export
see only this protocol; no module outside `backends/` asks which one it has."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyarrow as pa

from compressor_model.config import Thresholds
from compressor_model.records import Counts, DocRecord

from ..store.parquet import BackendInfo, StoredRows


class Backend(Protocol):
    info: BackendInfo  # stamped into every output it makes
    symbol_type: pa.DataType  # of the Parquet `symbols` list

    def segment(self, docs: list[bytes], thresholds: Thresholds | None) -> tuple[list[np.ndarray], Counts]:
        """Each document's segment byte offsets, and the model work they took."""
        ...

    def compress(self, docs: list[bytes], offs: list[np.ndarray], cache) -> tuple[list[DocRecord], Counts]:
        """Records of segmented documents (cache: get_many/put_many, or None)."""
        ...

    def decode(self, rows: StoredRows) -> list[bytes | None]:
        """Each stored row's bytes back (None where a segment does not decode)."""
        ...

    def maxrss(self) -> int:
        """Peak memory of the process doing the model work (0 where there is none)."""
        ...
