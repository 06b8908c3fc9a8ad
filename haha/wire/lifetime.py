"""Lifetimes on the wire: 16-bit counts of 4-second units (RFC 6275 6.1.7).

Binding Updates, Binding Acknowledgements, Binding Refresh Advice (RFC 6275 6.2.4) and the
draft's BCE Information options carry lifetimes in units of 4 seconds; everything else in haha
counts seconds. These are the only conversions between the two.
"""

import math

#: Seconds in one lifetime unit.
UNIT = 4
#: The largest lifetime a 16-bit field carries, in units and in seconds.
MAX_UNITS = 0xFFFF
MAX_SECONDS = MAX_UNITS * UNIT

__all__ = ["MAX_SECONDS", "MAX_UNITS", "UNIT", "seconds", "units", "units_ceil"]


def seconds(units: int) -> int:
    """The seconds in ``units`` 4-second units."""
    return units << 2


def units(seconds: float) -> int:
    """Whole 4-second units in ``seconds`` (rounded down), capped at 65535."""
    u = int(seconds) >> 2
    return u if u < MAX_UNITS else MAX_UNITS


def units_ceil(seconds: float) -> int:
    """4-second units covering ``seconds`` (rounded up), capped at 65535; 0 for nothing left."""
    if seconds <= 0:
        return 0
    u = math.ceil(seconds / UNIT)
    return u if u < MAX_UNITS else MAX_UNITS
