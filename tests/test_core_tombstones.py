"""Tombstones of deleted bindings (haha.core.tombstones): what a late BIU may and may not bring
back, and for how long."""

from ipaddress import IPv6Address as A

from haha.core.tombstones import TOMBSTONE_TIME, TOMBSTONE_WINDOW, Tombstones

HOA = A("2001:db8:1::10")


def test_only_strictly_older_numbers_within_the_window_are_buried():
    """A BIU entry up to TOMBSTONE_WINDOW behind the deleted number is a late copy; the
    deleted number itself, newer ones, and ones further behind (a node restarted with a new
    random number) are not; the sequence space wraps modulo 2^16."""
    t = Tombstones(max_timeout=32.0)
    t.bury(HOA, 10, now=0.0)
    assert t.buried(HOA, 9, 1.0) and t.buried(HOA, (10 - TOMBSTONE_WINDOW) % 65536, 1.0)
    assert not t.buried(HOA, (10 - TOMBSTONE_WINDOW - 1) % 65536, 1.0)
    assert not t.buried(HOA, 10, 1.0) and not t.buried(HOA, 11, 1.0)
    assert not t.buried(A("2001:db8:1::11"), 9, 1.0)
    assert t.sequence(HOA) == 10 and t.sequence(A("2001:db8:1::11")) is None


def test_a_tombstone_lasts_its_time_then_is_forgotten():
    """TOMBSTONE_TIME, or 4 x biu_max_timeout when longer; an expired tombstone is dropped
    when asked about, and the ones run out are swept on the next burial."""
    t = Tombstones(max_timeout=32.0)
    t.bury(HOA, 10, now=0.0)
    assert t.buried(HOA, 9, TOMBSTONE_TIME - 0.1)
    assert not t.buried(HOA, 9, TOMBSTONE_TIME) and HOA not in t and not t
    long = Tombstones(max_timeout=100.0)
    long.bury(HOA, 10, now=0.0)
    assert long.buried(HOA, 9, 399.0) and not long.buried(HOA, 9, 400.0)
    t.bury(HOA, 10, now=0.0)
    t.bury(A("2001:db8:1::11"), 5, now=TOMBSTONE_TIME + 1)
    assert HOA not in t and len(t) == 1


def test_a_new_burial_replaces_the_old_and_lift_forgets():
    """Burying again moves the number and the deadline (the older queue entry does not sweep
    the newer tombstone); lift removes it at once."""
    t = Tombstones(max_timeout=1.0)
    t.bury(HOA, 10, now=0.0)
    t.bury(HOA, 20, now=200.0)
    t.bury(A("2001:db8:1::11"), 5, now=TOMBSTONE_TIME + 1)  # sweeps what ran out by then
    assert t.sequence(HOA) == 20 and t.buried(HOA, 19, TOMBSTONE_TIME + 1)
    t.lift(HOA)
    assert HOA not in t and not t.buried(HOA, 19, TOMBSTONE_TIME + 1)
    t.lift(HOA)  # lifting nothing is harmless
