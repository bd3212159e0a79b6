"""Which Backend a job config asks for."""

from __future__ import annotations

from ..config import Compressor, JobConfig
from .base import Backend
from .neural import NeuralBackend
from .whole_document import GzipBackend, TokenizerBackend

WHOLE_DOCUMENT = {Compressor.GZIP: GzipBackend, Compressor.TOKENIZER: TokenizerBackend}


def make_backend(cfg: JobConfig, service=None, remote: bool = True) -> Backend:
    """The compressor: a model service's (an actor handle, or in-process with remote=False),
    or a CPU-only one."""
    if cfg.model.compressor.needs_model:
        return NeuralBackend(service, remote=remote)
    return WHOLE_DOCUMENT[cfg.model.compressor](cfg)
