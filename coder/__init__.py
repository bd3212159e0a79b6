"""Equal-information arithmetic coder: quantization, Numba kernels, packing, reference."""

from .api import CoderConfig, Packed, Windows, decode, encode, pack, stitch_offsets, unpack
from .constants import FORMAT_VERSION, NO_WINDOWS, PROB_BITS, PROB_TOTAL
from .stream import Streams, decode_streams, encode_streams, pack_streams, unpack_streams

__all__ = [
    "CoderConfig",
    "FORMAT_VERSION",
    "NO_WINDOWS",
    "PROB_BITS",
    "PROB_TOTAL",
    "Packed",
    "Streams",
    "Windows",
    "decode",
    "decode_streams",
    "encode",
    "encode_streams",
    "pack",
    "pack_streams",
    "stitch_offsets",
    "unpack",
    "unpack_streams",
]
