"""The 4-second lifetime unit (RFC 6275 6.1.7) is converted in one place, both ways."""

import re
from pathlib import Path

import pytest

from haha.wire.lifetime import MAX_SECONDS, MAX_UNITS, seconds, units, units_ceil


@pytest.mark.parametrize("n", [0, 1, 2, 150, 0xFFFF])
def test_seconds_and_units_round_trip(n):
    """``seconds`` is 4 s per unit and ``units`` gives the same count back."""
    assert seconds(n) == 4 * n
    assert units(seconds(n)) == n and units_ceil(seconds(n)) == n


def test_rounding_and_cap():
    """``units`` rounds down, ``units_ceil`` up (0 for nothing left); both cap at 65535."""
    assert (units(7), units_ceil(7)) == (1, 2)
    assert (units(3.9), units_ceil(0.1), units_ceil(0), units_ceil(-5)) == (0, 1, 0, 0)
    assert units(MAX_SECONDS + 100) == units_ceil(MAX_SECONDS + 100) == MAX_UNITS
    assert MAX_SECONDS == 262140


def test_no_inline_conversion_left_in_the_package():
    """No module of haha converts a lifetime with ``* 4``, ``<< 2``, ``>> 2``, ``// 4`` or
    ``/ 4`` inline: they all call haha.wire.lifetime."""
    root = Path(__file__).resolve().parent.parent / "haha"
    inline = re.compile(r"lifetime\w*\s*(\*\s*4|<<\s*2|>>\s*2|//\s*4|/\s*4)\b|"
                        r"(advice|refresh\w*)\s*\*\s*4\b")
    found = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py")
             if p.name != "lifetime.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if inline.search(line)]
    assert found == []
