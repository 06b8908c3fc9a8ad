"""Sequence numbers and lifetimes as RFC 6275 counts them.

Binding Update and HELLO sequence numbers are 16-bit and compared modulo 2**16 (RFC 6275 9.5.1,
RFC 6275 9.5.1): ``x`` is newer than ``y`` when ``(x - y) mod 2**16`` is in 1..32767. Lifetimes in
Binding Updates, Binding Acknowledgements and BCE Information options are in units of 4 seconds
(RFC 6275 6.1.7).
"""

# The 4-second lifetime unit is converted in one place, haha.wire.lifetime (importable here too).
from haha.wire.lifetime import MAX_UNITS, seconds, units, units_ceil

__all__ = ["HALF", "MAX_UNITS", "MODULUS", "distance", "newer", "next_sequence", "seconds", "units",
           "units_ceil"]

MODULUS = 1 << 16
HALF = 1 << 15


def newer(x: int, y: int) -> bool:
    """True when sequence number ``x`` is newer than ``y`` (modulo 2**16)."""
    return 0 < (x - y) % MODULUS < HALF


def distance(x: int, y: int) -> int:
    """How far ``x`` is ahead of ``y`` (negative when behind), in -32768..32767."""
    d = (x - y) % MODULUS
    return d - MODULUS if d >= HALF else d


def next_sequence(x: int, step: int = 1) -> int:
    """``x + step`` modulo 2**16."""
    return (x + step) % MODULUS


