"""address_text (haha.wire.addresses) is str(IPv6Address), character for character: random
addresses, addresses made mostly of zero groups (where the ``::`` placement is decided), and
the forms C libraries write differently (IPv4-compatible and -mapped, scoped), so that names
built from it (the sequence store's entries) are the ones written before."""

import random
from ipaddress import IPv6Address

from haha.security.seqstore import _name
from haha.wire.addresses import address_text


def test_address_text_is_str_for_every_kind_of_address():
    """20,000 random addresses whose groups are zero with probability 0 to 0.9, plus the
    special forms, give exactly str()."""
    rng = random.Random(5952)
    for i in range(20000):
        p = (i % 10) / 10
        words = [0 if rng.random() < p else rng.getrandbits(rng.choice((4, 8, 16)))
                 for _ in range(8)]
        a = IPv6Address(sum(w << (16 * (7 - k)) for k, w in enumerate(words)))
        assert address_text(a) == str(a), words
    for text in ("::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "::ffff:0:1.2.3.4",
                 "::1:0", "::1:0:0", "0:0:0:0:0:1:0:0", "fe80::1%eth0", "1::", "1::1"):
        a = IPv6Address(text)
        assert address_text(a) == str(a), text


def test_sequence_store_names_are_unchanged():
    """The sequence store names an SA's entry with the address as str() writes it."""
    a = IPv6Address("2001:db8:1::1:2345")
    assert _name("out", a, 0x1234) == "out 2001:db8:1::1:2345 0x00001234"
    assert _name("in", "2001:db8::7", 0x100) == "in 2001:db8::7 0x00000100"
