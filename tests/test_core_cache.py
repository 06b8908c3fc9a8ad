"""The binding cache: primaries and copies, lookups by home address and longest prefix,
lazy expiry."""

from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

from haha.core.cache import Binding, BindingCache

PEER = A("2001:db8:1::2")


def store(c, hoa, coa="2001:db8:99::1", seq=1, expires=100.0, prefixes=(), primary=None):
    return c.store(A(hoa), A(coa), 0xC000, seq, 400, expires, prefixes, primary, None, 0.0)


def test_store_update_remove_and_primary_count():
    """Entries are created then updated in place; copies are marked with their primary and
    only primaries are counted as such."""
    c = BindingCache()
    b = store(c, "2001:db8:1::10")
    assert len(c) == 1 and c.primary_count == 1 and not b.is_copy
    b2 = store(c, "2001:db8:1::10", coa="2001:db8:99::2", seq=2, primary=PEER)
    assert b2 is b and b.care_of == A("2001:db8:99::2") and b.is_copy and b.primary == PEER
    assert c.primary_count == 0
    assert c.copies_of(PEER) == [b] and c.primaries() == []
    assert c.remove(A("2001:db8:1::10")) is b and c.remove(A("2001:db8:1::10")) is None
    assert len(c) == 0 and A("2001:db8:1::10") not in c


def test_longest_prefix_match_and_reindexing():
    """A destination inside several mobile network prefixes finds the longest; prefixes move
    with updates and go with removals."""
    c = BindingCache()
    store(c, "2001:db8:1::20", prefixes=(N("2001:db8:100::/40"),))
    store(c, "2001:db8:1::21", prefixes=(N("2001:db8:100:5500::/56"),))
    assert c.lookup(A("2001:db8:100:5500::9")).home_address == A("2001:db8:1::21")
    assert c.lookup(A("2001:db8:100:9900::9")).home_address == A("2001:db8:1::20")
    assert c.lookup(A("2001:db8:1::21")).home_address == A("2001:db8:1::21")
    assert c.lookup(A("2001:db8:200::1")) is None
    store(c, "2001:db8:1::21", prefixes=(N("2001:db8:300::/48"),))
    assert c.lookup_prefix(A("2001:db8:100:5500::9")).home_address == A("2001:db8:1::20")
    assert c.lookup_prefix(A("2001:db8:300::1")).home_address == A("2001:db8:1::21")
    c.remove(A("2001:db8:1::20"))
    assert c.lookup_prefix(A("2001:db8:100::1")) is None


def test_expiry_is_lazy_and_follows_refreshes():
    """A refresh pushes the expiry back without searching; stale heap items are skipped."""
    c = BindingCache()
    store(c, "2001:db8:1::10", expires=10.0)
    store(c, "2001:db8:1::11", expires=20.0)
    store(c, "2001:db8:1::10", seq=2, expires=30.0)
    assert c.next_expiry() == 20.0
    assert c.pop_expired(19.9) == []
    assert [b.home_address for b in c.pop_expired(25.0)] == [A("2001:db8:1::11")]
    assert c.next_expiry() == 30.0
    c.remove(A("2001:db8:1::10"))
    assert c.next_expiry() is None and c.pop_expired(100.0) == []


def test_heap_is_compacted_after_many_refreshes():
    """Refreshing one binding many times does not let the heap grow without bound."""
    c = BindingCache()
    for i in range(1000):
        store(c, "2001:db8:1::10", seq=i, expires=10.0 + i)
    c.pop_expired(5.0)
    assert len(c._heap) <= 64 + 3
    assert c.next_expiry() == 1009.0


def test_binding_repr_and_remaining():
    """A binding says what it is; remaining lifetime never goes negative."""
    b = Binding(A("2001:db8:1::10"), A("2001:db8:99::1"), 0, 1, 400, 50.0, primary=PEER)
    assert "copy of 2001:db8:1::2" in repr(b)
    assert b.remaining(40.0) == 10.0 and b.remaining(60.0) == 0.0
