"""The Home Agent list: HELLO freshness and lifetime, expiry, synchronisation state, ranking
(draft 5.4, RFC 6275 10.5.1, docs/protocol.md 6.6)."""

from ipaddress import IPv6Address as A

import pytest

from haha.core import halist
from haha.core.halist import HomeAgentList
from haha.wire.mh import HaHello

P2 = A("2001:db8:1::2")
P3 = A("2001:db8:1::3")


def hello(seq, pref=0, lifetime=30, address=P2):
    return HaHello(seq, pref, lifetime, 10, 64, address)


def test_new_updated_unchanged_and_deleted():
    """A first HELLO adds the sender, a changed one updates it, lifetime 0 deletes it."""
    hl = HomeAgentList()
    assert hl.hello(P2, hello(5), 0.0) == halist.NEW
    e = hl.get(P2)
    assert (e.home_agent, e.preference, e.expires, e.source) == (P2, 0, 30.0, "hello")
    assert hl.hello(P2, hello(6), 1.0) == halist.UNCHANGED and hl.get(P2).expires == 31.0
    assert hl.hello(P2, hello(7, pref=5), 2.0) == halist.UPDATED and hl.get(P2).preference == 5
    assert hl.hello(P2, hello(8, lifetime=0), 3.0) == halist.DELETED and P2 not in hl
    assert hl.hello(P2, hello(9, lifetime=0), 4.0) == halist.UNKNOWN


def test_freshness_by_sequence_with_restart_window():
    """Duplicates and reordered (slightly older) HELLOs are stale; one far behind means the
    peer restarted with a new random sequence and is accepted."""
    hl = HomeAgentList()
    hl.hello(P2, hello(100), 0.0)
    assert hl.hello(P2, hello(100), 1.0) == halist.STALE
    assert hl.hello(P2, hello(99, pref=9), 1.0) == halist.STALE
    assert hl.get(P2).preference == 0
    hl.bulk_answered(P2)
    assert hl.get(P2).in_sync
    assert hl.hello(P2, hello(100 - 64, pref=9), 1.0) == halist.RESTARTED
    assert not hl.get(P2).in_sync and hl.ranked() == []
    assert hl.hello(P2, hello(0xFFFF & (36 + 40000), pref=9), 2.0) == halist.RESTARTED
    assert hl.hello(P2, hello(0xFFFF & (36 + 40001), pref=9), 3.0) == halist.UNCHANGED


def test_router_advertisements_are_not_an_input():
    """The list has no way in for Router Advertisements: only HELLO makes an entry."""
    assert not hasattr(HomeAgentList(), "advertisement")


def test_only_peers_in_sync_are_ranked():
    """A new entry is live but unranked until its answer to our bulk request completed; a
    peer asking us for everything (it lost its state) is unranked until it acknowledged the
    end of our answer."""
    hl = HomeAgentList()
    hl.hello(P2, hello(1, pref=9), 0.0)
    assert P2 in hl and hl.ranked() == [] and hl.synced() == []
    hl.bulk_answered(P2)
    assert [e.address for e in hl.ranked()] == [P2]
    hl.lost_state(P2)
    assert hl.ranked() == [] and "unsynced" in repr(hl.get(P2))
    hl.bulk_delivered(P2)
    assert [e.address for e in hl.ranked()] == [P2]
    for f in (hl.bulk_answered, hl.lost_state, hl.bulk_delivered):
        f(P3)  # not live: nothing happens
    assert P3 not in hl


def test_expiry_and_ranking():
    """Entries die when their lifetime passes; ranking is highest preference, then lowest
    address."""
    hl = HomeAgentList()
    hl.hello(P3, hello(1, pref=5, address=P3), 0.0)
    hl.hello(P2, hello(1, pref=5), 10.0)
    hl.hello(A("2001:db8:1::9"), hello(1, pref=7, lifetime=100), 0.0)
    for e in list(hl.entries.values()):
        hl.bulk_answered(e.address)
    assert [e.address for e in hl.ranked()] == [A("2001:db8:1::9"), P2, P3]
    assert hl.next_expiry() == 30.0
    assert [e.address for e in hl.pop_expired(30.0)] == [P3]
    assert len(hl) == 2 and hl.next_expiry() == 40.0
    assert "2001:db8:1::2" in repr(hl.get(P2))


def test_the_list_is_a_collection_of_peer_addresses():
    """Iterating the list gives the live peers' signalling addresses (what the address
    take-over's ``Collection[IPv6Address]`` parameters are given), and ``entry`` returns a live
    peer's entry where ``get`` may answer None; a peer that is not live is a KeyError there."""
    from collections.abc import Collection

    hl = HomeAgentList()
    assert list(hl) == [] and isinstance(hl, Collection)
    hl.hello(P2, hello(1), 0.0)
    hl.hello(P3, hello(1, address=P3), 0.0)
    assert sorted(hl) == [P2, P3] and len(hl) == 2 and P3 in hl
    assert hl.entry(P3) is hl.get(P3) and hl.entry(P3).home_agent == P3
    hl.hello(P3, hello(2, lifetime=0, address=P3), 1.0)
    assert list(hl) == [P2] and hl.get(P3) is None
    with pytest.raises(KeyError):
        hl.entry(P3)
