"""The one JSON conversion of control answers (haha.control.jsonvalue)."""

import json
from ipaddress import IPv6Address, IPv6Network

from haha.control.jsonvalue import jsonable


def test_addresses_become_text_everywhere_keys_included():
    """Addresses and prefixes become text as values, inside lists and tuples, and as mapping
    keys (which json.dumps(default=str) refuses); JSON's own types are kept as they are."""
    a, p = IPv6Address("2001:db8::1"), IPv6Network("2001:db8::/64")
    value = {a: (p, [a, None]), "n": 1, "f": 0.5, "b": True, "s": "x"}
    out = jsonable(value)
    assert out == {"2001:db8::1": ["2001:db8::/64", ["2001:db8::1", None]], "n": 1, "f": 0.5,
                   "b": True, "s": "x"}
    assert json.loads(json.dumps(out)) == out
