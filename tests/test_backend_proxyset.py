"""ProxiedSet: the proxy ND entries of a backend, stored per interface, behave as a set of
(address, interface) pairs (tier 1)."""

import random
import sys
from ipaddress import IPv6Address

from haha.backends.null import NullBackend
from haha.backends.proxyset import ProxiedSet

A = [IPv6Address(f"2001:db8:1::{i:x}") for i in range(1, 40)]
IFACES = ["eth0", "eth1", None]


def test_same_answers_as_a_set_of_pairs_over_random_operations():
    """Over 5,000 random add/discard/clear steps on addresses and interfaces (None included),
    membership, length, iteration and equality agree with a plain set of tuples at every step;
    an emptied interface leaves nothing behind."""
    rng = random.Random(7)
    mine, ref = ProxiedSet(), set()
    for step in range(5000):
        pair = (rng.choice(A), rng.choice(IFACES))
        op = rng.random()
        if op < 0.55:
            mine.add(pair)
            ref.add(pair)
        elif op < 0.995:
            mine.discard(pair)
            ref.discard(pair)
        else:
            mine.clear()
            ref.clear()
        probe = (rng.choice(A), rng.choice(IFACES))
        assert (probe in mine) == (probe in ref), step
        assert len(mine) == len(ref), step
        assert set(mine) == ref and mine == ref, step
    for pair in list(ref):
        mine.discard(pair)
    assert len(mine) == 0 and not mine._by_interface


def test_not_a_pair_is_not_a_member():
    """Anything but a 2-tuple is simply not in the set (no exception), as with a set."""
    s = ProxiedSet([(A[0], "eth0")])
    assert (A[0], "eth0") in s
    for other in (A[0], "eth0", (A[0],), (A[0], "eth0", 1), [A[0], "eth0"], None):
        assert other not in s


def test_iteration_survives_removal_while_iterating():
    """A backend's stop walks its entries and removes each: iterating while discarding
    neither raises nor skips an entry."""
    s = ProxiedSet((a, "eth0") for a in A[:10])
    seen = []
    for pair in s:
        s.discard(pair)
        seen.append(pair)
    assert len(seen) == 10 and len(s) == 0


def test_an_entry_costs_no_tuple():
    """What makes it smaller: the addresses are held in a per-interface set, by reference, so
    100 entries hold no tuple (a set of pairs holds one 2-tuple per entry)."""
    s = ProxiedSet((a, "eth0") for a in A)
    inner = s._by_interface["eth0"]
    assert all(any(x is a for x in inner) for a in A)
    assert sys.getsizeof(inner) <= sys.getsizeof(set((a, "eth0") for a in A))


def test_null_backend_proxy_nd_in_and_out():
    """The null backend's proxy ND entries (a ProxiedSet) start, show in the snapshot, and
    stop per interface."""
    b = NullBackend()
    b.start()
    b.proxy_nd_start(A[0], "eth0")
    b.proxy_nd_start(A[0], "eth1")
    b.proxy_nd_start(A[1], None)
    assert b.proxied == {(A[0], "eth0"), (A[0], "eth1"), (A[1], None)}
    b.proxy_nd_stop(A[0], "eth0")
    assert b.proxied == {(A[0], "eth1"), (A[1], None)}
    assert b.snapshot()["proxy_nd"] in ([[str(A[0]), "eth1"], [str(A[1]), None]],
                                         [[str(A[1]), None], [str(A[0]), "eth1"]])
    b.stop()
    assert b.proxied == set()
