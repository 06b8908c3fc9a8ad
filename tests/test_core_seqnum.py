"""Sequence numbers modulo 2**16 and 4-second lifetime units (RFC 6275 9.5.1, 6.1.7)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from haha.core.seqnum import distance, newer, next_sequence, units, units_ceil

seq = st.integers(0, 0xFFFF)


def test_newer_across_the_wrap():
    """x is newer than y when (x - y) mod 2**16 is in 1..32767 (RFC 6275 9.5.1)."""
    assert newer(1, 0) and newer(0, 0xFFFF) and newer(5, 0xFFF0)
    assert not newer(0, 0) and not newer(0, 1) and not newer(0xFFFF, 0)
    assert newer(32767, 0) and not newer(32768, 0)
    assert next_sequence(0xFFFF) == 0 and next_sequence(7, 3) == 10


@settings(max_examples=300)
@given(seq, seq)
def test_newer_is_antisymmetric(x, y):
    """Of two different numbers at most one is newer; distance agrees with newer."""
    assert not (newer(x, y) and newer(y, x))
    assert newer(x, y) == (distance(x, y) > 0)
    assert distance(x, y) == -distance(y, x) or distance(x, y) == -32768


def test_lifetime_units():
    """Lifetimes go in 4-second units: rounded down when granting, up for what remains."""
    assert units(0) == 0 and units(3) == 0 and units(4) == 1 and units(3600) == 900
    assert units(10 ** 9) == 0xFFFF
    assert units_ceil(0) == 0 and units_ceil(-5) == 0 and units_ceil(0.1) == 1
    assert units_ceil(4) == 1 and units_ceil(4.01) == 2 and units_ceil(10 ** 9) == 0xFFFF
