"""Numbers shared by the quantizer, the encoder and the decoder.

Changing any of these changes every bitstream: bump FORMAT_VERSION with them.
"""

FORMAT_VERSION = 1

# Frequencies of the 256 byte values are integers summing to 2**PROB_BITS; every byte
# keeps a frequency of at least 1 so that no byte is ever impossible to code.
PROB_BITS = 16
PROB_TOTAL = 1 << PROB_BITS
ALPHABET = 256

# The coder works on the interval [0, 2**STATE_BITS) while the window can still hold
# more than one W-bit code point ("phase 1"), so its low end needs W + G bits with
# G = STATE_BITS - W guard bits. 62 keeps every product below 2**63 in int64.
STATE_BITS = 62

# Once only one code point can remain ("phase 2"), the coder tracks the distance from
# the interval's low end to that point and renormalises the range into
# [2**RENORM_FLOOR_BITS, 2**STATE_BITS) by RENORM_SHIFT bits at a time.
RENORM_FLOOR_BITS = 54
RENORM_SHIFT = 8

WINDOW_BITS_CHOICES = (8, 16, 32)
NO_WINDOWS = 0  # window_bits for one arithmetic-code stream per segment (coder.stream)
SYMBOL_BITS_CHOICES = (8, 16)
DEFAULT_WINDOW_BITS = 16
DEFAULT_SYMBOL_BITS = 16

# Per-window byte count that marks an escape window: the window's code is the raw
# byte value and it covers exactly one byte (only possible when W < PROB_BITS).
ESCAPE_COUNT = 0
