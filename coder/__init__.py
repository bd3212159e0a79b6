"""Equal-information arithmetic coder: quantization, Numba kernels, packing, reference."""

from .api import CoderConfig, Packed, Windows, decode, encode, pack, unpack
from .constants import FORMAT_VERSION, PROB_BITS, PROB_TOTAL

__all__ = [
    "CoderConfig",
    "FORMAT_VERSION",
    "PROB_BITS",
    "PROB_TOTAL",
    "Packed",
    "Windows",
    "decode",
    "encode",
    "pack",
    "unpack",
]
