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
    assert c.expiry_entries() <= 64 + 3
    assert c.next_expiry() == 1009.0


def test_expiry_within_one_second_is_exact_and_in_order():
    """Bindings expiring milliseconds apart in the same second (one wheel bucket) expire each
    at its own time, never early, in order, also after refreshes that move one within the
    second and with ``limit`` cutting a mass expiry into slices."""
    c = BindingCache()
    times = [50.0 + i / 1000 for i in range(500)]
    for i, t in enumerate(reversed(times)):
        store(c, f"2001:db8:1::{i + 1:x}", expires=t)
    # a refresh within the second: the earliest now expires last
    first = min(c, key=lambda b: b.expires)
    store(c, str(first.home_address), seq=2, expires=50.9995)
    # a bucket this large answers its second first (a lower bound), then exactly once sorted
    assert c.next_expiry() == 50.0
    assert c.pop_expired(50.0) == [] and c.next_expiry() == 50.001
    assert c.pop_expired(50.0005) == []
    got = []
    now = 50.0
    while len(c):
        now = c.next_expiry()
        batch = c.pop_expired(now, limit=7)
        assert len(batch) <= 7 and all(b.expires <= now for b in batch)
        assert all(b.expires > now for b in c) or len(batch) == 7
        got += [b.expires for b in batch]
    assert got == sorted(got) and len(got) == 500 and got[-1] == 50.9995


def test_expiry_wheel_holds_one_entry_per_binding():
    """The expiry index costs one list slot per binding (no tuple, float or counter per
    entry): N bindings created and each refreshed into the same second leave N entries."""
    import tracemalloc

    c = BindingCache()
    for i in range(2000):
        store(c, f"2001:db8:1::{i + 1:x}", expires=100.0 + i % 7)
    for i in range(2000):
        store(c, f"2001:db8:1::{i + 1:x}", seq=2, expires=100.5 + i % 7)
    assert c.expiry_entries() == 2000
    import haha.core.cache

    more = [Binding(A(f"2001:db8:2::{i:x}"), A("2001:db8:99::1"), 0, 1, 400,
                    200.0 + i % 10 + i / 100000) for i in range(4000)]
    mine = [tracemalloc.Filter(True, haha.core.cache.__file__)]  # the index's own allocations
    tracemalloc.start()
    before = tracemalloc.take_snapshot().filter_traces(mine)
    for b in more:
        c._schedule(b)  # what store() adds to the index for a new binding
    after = tracemalloc.take_snapshot().filter_traces(mine)
    tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    per_binding = grown / len(more)
    assert per_binding < 24, per_binding  # a (expires, order, address) heap item took ~100


def test_binding_repr_and_remaining():
    """A binding says what it is; remaining lifetime never goes negative."""
    b = Binding(A("2001:db8:1::10"), A("2001:db8:99::1"), 0, 1, 400, 50.0, primary=PEER)
    assert "copy of 2001:db8:1::2" in repr(b)
    assert b.remaining(40.0) == 10.0 and b.remaining(60.0) == 0.0


def test_bindings_share_their_home_agents_addresses_and_lifetimes():
    """Bindings naming equal (but separately decoded) local or primary addresses, and equal
    lifetimes, hold one object for each: a cache of many copies keeps one address per peer,
    not one per copy."""
    c = BindingCache()
    made = []
    for i in range(50):
        b = c.store(A(f"2001:db8:1::{i + 1:x}"), A("2001:db8:99::1"), 0xC000, 1, int("3600"),
                    100.0, (), A("2001:db8:1::2"), A("2001:db8:1::1"), 0.0)
        made.append(b)
    assert len({id(b.primary) for b in made}) == 1
    assert len({id(b.local) for b in made}) == 1
    assert len({id(b.lifetime) for b in made}) == 1
    assert all(b.primary == A("2001:db8:1::2") and b.lifetime == 3600 for b in made)
    # an update to another primary keeps that one shared too
    for b in made[:10]:
        c.store(b.home_address, b.care_of, b.flags, 2, 3600, 100.0, (), A("2001:db8:1::3"),
                None, 0.0)
    assert len({id(b.primary) for b in made[:10]}) == 1 and made[0].primary == A("2001:db8:1::3")


def test_bindings_share_their_flags_and_primaries_keep_no_time_of_their_own():
    """Equal flags values decoded from different messages (A|H is above the integers Python
    shares) are one object in the cache; a primary's ``touched`` is the shared 0.0 whatever
    time it was stored at (nothing sweeps primaries), while a copy keeps the time a BIU set
    it, also once a primary became a copy and back."""
    c = BindingCache()
    made = []
    for i in range(50):
        flags = int(str(0xC000 + (i % 2)))  # two values, each a new object at every store
        made.append(c.store(A(f"2001:db8:1::{i + 1:x}"), A("2001:db8:99::1"), flags, 1, 400,
                            100.0, (), None, None, float(f"{i}.5")))
    assert len({id(b.flags) for b in made}) == 2
    assert {b.flags for b in made} == {0xC000, 0xC001}
    assert all(b.touched == 0.0 for b in made) and len({id(b.touched) for b in made}) == 1
    b = c.store(made[0].home_address, made[0].care_of, 0xC000, 2, 400, 100.0, (), PEER, None,
                17.25)
    assert b is made[0] and b.is_copy and b.touched == 17.25
    c.store(b.home_address, b.care_of, 0xC000, 3, 400, 100.0, (), None, None, 18.5)
    assert b.touched == 0.0
    c.store(b.home_address, b.care_of, 0xC000, 4, 400, 100.0, (), PEER, None, 19.5)
    assert b.touched == 19.5


def test_digests_follow_every_change_without_being_stored():
    """After creations, updates (sequence, care-of, primary changes) and removals in random
    order, the per-primary (count, XOR) equals the digests of the entries as they are, and
    a binding keeps no digest of its own (44 octets less each)."""
    import random
    from functools import reduce

    from haha.core.cache import bce_digest

    rng = random.Random(7)
    c = BindingCache()
    primaries = [None, PEER, A("2001:db8:1::3")]
    for _ in range(3000):
        hoa = A(f"2001:db8:1::{rng.randrange(1, 200):x}")
        if rng.random() < 0.2:
            c.remove(hoa)
            continue
        c.store(hoa, A(f"2001:db8:99::{rng.randrange(1, 5)}"), 0xC000, rng.randrange(4), 400,
                100.0 + rng.randrange(50), (), rng.choice(primaries), None, 0.0)
    for p in primaries:
        mine = [b for b in c if b.primary == p]
        want = reduce(lambda x, y: x ^ y, (bce_digest(b.home_address, b.care_of, b.flags,
                                                      b.sequence, b.prefixes) for b in mine), 0)
        assert c.digest(p) == (len(mine), want)
    assert not hasattr(next(iter(c)), "__dict__") and "digest" not in Binding.__slots__


def test_bce_digest_is_the_documented_blake2b_and_keeps_no_state_between_calls():
    """bce_digest equals BLAKE2b-64 personalised ``haha-bce-1`` over HoA | CoA | Flags |
    Sequence | (Prefix Length | Prefix)* computed from scratch (docs/protocol.md), with and
    without prefixes, whatever was digested before (the shared hashing state is copied, never
    updated in place)."""
    from hashlib import blake2b
    from ipaddress import IPv6Network

    from haha.core.cache import bce_digest

    def reference(hoa, coa, flags, seq, prefixes=()):
        data = hoa.packed + coa.packed + flags.to_bytes(2, "big") + seq.to_bytes(2, "big")
        for p in prefixes:
            data += bytes((p.prefixlen,)) + p.network_address.packed
        return int.from_bytes(blake2b(data, digest_size=8, person=b"haha-bce-1").digest(),
                              "big")

    hoa, coa = A("2001:db8:1::10"), A("2001:db8:99::7")
    nets = (IPv6Network("2001:db8:50::/48"), IPv6Network("2001:db8:60:1::/64"))
    cases = [(hoa, coa, 0xC000, 1, ()), (hoa, coa, 0xC000, 2, ()), (hoa, coa, 0xC000, 1, nets),
             (coa, hoa, 0x0001, 0xFFFF, nets[:1])]
    for _ in range(2):
        for case in cases:
            assert bce_digest(*case) == reference(*case)
    assert len({bce_digest(*case) for case in cases}) == len(cases)


def test_entries_are_found_by_any_equal_address_and_nothing_else():
    """The cache keys entries by the address's value: an equal IPv6Address built apart finds,
    refreshes and removes the entry; None, a string or an IPv4 address find nothing."""
    from ipaddress import IPv4Address

    c = BindingCache()
    c.store(A("2001:db8:1::10"), A("2001:db8:99::1"), 0xC000, 1, 400, 100.0, (), None, None, 0.0)
    other = A("2001:db8:1::10")
    assert other in c and c.get(other).sequence == 1 and c.lookup(other) is c.get(other)
    c.store(other, A("2001:db8:99::2"), 0xC000, 2, 400, 100.0, (), None, None, 0.0)
    assert len(c) == 1 and c.get(A("2001:db8:1::10")).sequence == 2
    c.store(A("::a00:1"), A("2001:db8:99::3"), 0xC000, 1, 400, 100.0, (), None, None, 0.0)
    for nothing in (None, "2001:db8:1::10", IPv4Address("10.0.0.1")):
        assert nothing not in c and c.get(nothing) is None and c.remove(nothing) is None
    assert c.get(A("::a00:1")) is not None and len(c) == 2
    c.remove(A("::a00:1"))
    assert c.remove(A("2001:db8:1::10")).sequence == 2 and len(c) == 0 and other not in c


def test_entries_in_address_order_skip_those_removed_meanwhile():
    """``in_address_order`` gives the entries by home address (numerically: ::9 before ::10),
    takes the order when the first is asked for, leaves out an entry removed after that and
    gives a changed one as it is when reached (the control socket's streamed ``bindings``)."""
    c = BindingCache()
    for hoa in ("2001:db8:1::10", "2001:db8:1::9", "2001:db8:1::ff", "2001:db8:1::a"):
        store(c, hoa)
    rows = c.in_address_order()
    first = next(rows)
    assert first.home_address == A("2001:db8:1::9")
    c.remove(A("2001:db8:1::10"))
    store(c, "2001:db8:1::ff", seq=7)
    store(c, "2001:db8:1::1")  # added after the order was taken: not given
    rest = list(rows)
    assert [b.home_address for b in rest] == [A("2001:db8:1::a"), A("2001:db8:1::ff")]
    assert rest[1].sequence == 7
