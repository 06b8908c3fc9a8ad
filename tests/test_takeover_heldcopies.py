"""Refreshes of a survivor's own primaries held back while its switch requests are out, then
sent packed (haha.core.heldcopies).

In the core: a survivor takes over its share of a dead peer's nodes and the nodes re-register,
one at a time, while the other survivor acknowledges every BIU at once (the case in which each
refresh used to leave in a BIU of its own). The refreshes now leave in a few full BIUs, each
within :data:`~haha.core.heldcopies.HOLD` of its registration; nothing is lost, nothing stale
is sent (a deregistration or a move overtaking a held refresh wins), and nothing is held when
no switch request is out. Meanwhile the survivor's HELLOs carry no binding digest, so a peer
does not take the held refreshes for lost state and ask for every binding (the digests, and
a repair when one is due, come back once the requests are done). On the in-memory network
the survivors end consistent, with at most one primary per node after every step.
"""

from ipaddress import IPv6Address as A

import pytest

from haha.core.effects import Event, Inbound, Send
from haha.core.heldcopies import HOLD, HeldCopies
from haha.wire.mh import BU_A, BU_H, BindingInfoAck, BindingInfoUpdate, BindingUpdate
from haha.wire.options import AlternateCareOfAddress

from test_takeover_split import (
    COA,
    HAS,
    _assert_served_and_told,
    _kill_and_watch,
    _network,
    _survivor,
    hoa,
)

ME, OTHER = HAS[1], HAS[2]


def _bius(out, to=OTHER):
    return [e.message for e in out
            if type(e) is Send and type(e.message) is BindingInfoUpdate and e.dst == to]


class _Peer:
    """The other survivor as the core sees it: every BIU sent to it is acknowledged at once
    (a fast peer), and what it was sent is recorded with the time."""

    def __init__(self, ha):
        self.ha = ha
        self.sent = []  # (time, BIU)

    def take(self, out, now):
        pending = list(out)
        while pending:
            bius = _bius(pending)
            pending = []
            for biu in bius:
                self.sent.append((now, biu))
                pending += self.ha.receive(Inbound(BindingInfoAck(biu.identifier), OTHER, ME,
                                                   None, None, OTHER), now)

    def entries(self, since=0.0):
        """``[(time, BceInfo)]`` of every entry sent at or after ``since``."""
        return [(t, e) for t, biu in self.sent if t >= since for e in biu.entries]


def _taken_over(copies=2000):
    """ha2 after taking over its share of ``copies`` copies of ha1's (ha1 dead at 3 s), every
    switch request still unanswered; the other survivor acknowledging everything."""
    ha = _survivor(ME, copies)
    peer = _Peer(ha)
    now = 0.0
    while not (ha.counters["taken-over"] and not ha.work.has("take-over")):
        d = ha.next_deadline()
        now = max(now + 0.005, d if d is not None else now)
        peer.take(ha.tick(now), now)
    mine = sorted((b.home_address for b in ha.cache if b.primary is None), key=int)
    assert mine and all(h in ha.switching for h in mine)
    return ha, peer, mine, now


def _bu(ha, home_address, sequence, now, care_of=None, lifetime=225):
    care_of = care_of if care_of is not None else A(COA + int(home_address) - int(hoa(0)))
    bu = BindingUpdate(sequence, BU_A | BU_H, lifetime, (AlternateCareOfAddress(care_of),))
    return ha.receive(Inbound(bu, care_of, ME, home_address, None, home_address), now)


def _run(ha, peer, now, until):
    """Tick ``ha`` at its deadlines up to ``until`` (the peer acknowledging)."""
    while True:
        d = ha.next_deadline()
        if d is None or d > until:
            return
        now = max(now, d)
        peer.take(ha.tick(now), now)


def test_refreshes_during_a_take_over_leave_packed_and_all_of_them():
    """1,000 nodes of the share re-register 1 ms apart while their switch requests are out
    and the other survivor acknowledges every BIU at once: their refreshes reach it at 20 or
    more a BIU (the default ``sync_mtu`` holds 24; before, one BIU per refresh, each
    acknowledged before the next), every one
    with its new sequence number, each within HOLD (and a tick) of its registration."""
    ha, peer, mine, now = _taken_over(4000)
    start = now
    nodes = mine[:1000]
    registered = {}
    for k, h in enumerate(nodes):
        now = start + 0.001 * (k + 1)
        _run(ha, peer, now - 0.001, now)
        peer.take(_bu(ha, h, 2, now), now)
        registered[h] = now
    _run(ha, peer, now, now + 2 * HOLD)
    refreshed = {}
    bius = 0
    for t, biu in peer.sent:
        if t < start:
            continue
        fresh = [e for e in biu.entries if e.sequence == 2]
        bius += bool(fresh)
        for e in fresh:
            refreshed.setdefault(e.home_address, t)
    assert set(refreshed) == set(nodes)
    assert bius <= 1000 // 20, f"{bius} BIUs for 1,000 refreshes"
    late = max(refreshed[h] - registered[h] for h in nodes)
    assert late <= HOLD + 0.01
    assert ha.counters["copies-held"] == 1000


def test_nothing_is_held_without_switch_requests_out():
    """A refresh at a home agent with no switch request outstanding leaves at once, in the
    call that accepted it."""
    ha, peer, mine, now = _taken_over(400)
    for h in mine:
        ha.switching.cancel(h)
    assert not ha.switching
    out = _bu(ha, mine[0], 2, now + 0.1)
    assert [e.sequence for biu in _bius(out) for e in biu.entries
            if e.home_address == mine[0]] == [2]
    assert not ha.held_copies and ha.counters["copies-held"] == 0


def test_a_deregistration_after_a_held_refresh_is_not_undone():
    """A node re-registers (its refresh held), then deregisters: the deletion leaves at
    once, and the release sends nothing for it (no stale binding resurrected at the peer);
    the others' refreshes still leave."""
    ha, peer, mine, now = _taken_over(400)
    gone, kept = mine[0], mine[1]
    peer.take(_bu(ha, gone, 2, now + 0.01), now + 0.01)
    peer.take(_bu(ha, kept, 2, now + 0.01), now + 0.01)
    assert gone in ha.held_copies and not peer.entries(now + 0.01)
    out = _bu(ha, gone, 3, now + 0.02, lifetime=0)
    peer.take(out, now + 0.02)
    assert [e.lifetime for _, e in peer.entries(now + 0.02)
            if e.home_address == gone] == [0]  # the deletion, at once
    _run(ha, peer, now + 0.02, now + 1.0)
    after = [(e.home_address, e.sequence) for _, e in peer.entries(now + 0.03)]
    assert (kept, 2) in after and all(h != gone for h, _ in after)


def test_a_move_is_not_held():
    """A registration that moves the node (new care-of address) is sent at once even while
    switch requests are out: only a pure refresh waits."""
    ha, peer, mine, now = _taken_over(400)
    h = mine[0]
    out = _bu(ha, h, 2, now + 0.01, care_of=A(int(COA) + 0xBEEF))
    assert [e.care_of_address for biu in _bius(out) for e in biu.entries
            if e.home_address == h] == [A(int(COA) + 0xBEEF)]
    assert h not in ha.held_copies


def test_release_sends_the_binding_as_it_now_is_and_skips_another_primary():
    """Released refreshes go as the cache holds them at release: one now primary at another
    home agent is skipped, one refreshed again is sent once, with the newest state."""
    from collections import Counter

    from haha.core.cache import BindingCache
    from haha.core.sync import Sync
    from haha.core.settings import HomeAgentSettings
    from test_takeover_split import PREFIX

    s = HomeAgentSettings(address=ME, home_prefix=PREFIX, peers=(OTHER,))
    counters = Counter()
    sync = Sync(s, __import__("random").Random(1), counters)
    sync.add_peer(OTHER)
    cache = BindingCache()
    held = HeldCopies(lambda: True, counters)
    a = cache.store(hoa(1), A(COA + 1), BU_H, 2, 900, 900.0, (), None, ME, 0.0)
    b = cache.store(hoa(2), A(COA + 2), BU_H, 2, 900, 900.0, (), None, ME, 0.0)
    assert held.hold(a, 0.0) and held.hold(b, 0.0) and held.due == pytest.approx(HOLD)
    a = cache.store(hoa(1), A(COA + 1), BU_H, 3, 900, 900.0, (), None, ME, 0.1, a)
    assert held.hold(a, 0.1)
    cache.store(hoa(2), A(COA + 2), BU_H, 4, 900, 900.0, (), OTHER, None, 0.1, b)
    out = []
    assert held.release(0.1, cache, sync, out) == 0 and not out  # not due yet
    assert held.release(HOLD, cache, sync, out) == 1
    entries = [(e.home_address, e.sequence) for biu in _bius(out) for e in biu.entries]
    assert entries == [(hoa(1), 3)]
    assert not held and held.due is None and counters["copies-held"] == 1


def test_split_take_over_on_the_network_ends_consistent_with_copies_held():
    """On the in-memory network (ESP, every packet encoded), a kill of the primary of 40
    nodes: at most one primary per node after every step, every node served and told by its
    only primary, the survivors' copies of each other's nodes current, and refreshes were
    held on the way (the take-over's switch requests were out when the nodes re-registered)."""
    net, has, mns = _network(11, 40)
    _kill_and_watch(net, has)
    _assert_served_and_told(net, has, mns)
    held = sum(ha.machine.counters["copies-held"] for ha in has[1:])
    assert held > 0
    for ha in has[1:]:
        other = has[2] if ha is has[1] else has[1]
        for b in other.machine.cache:
            if b.primary is None:
                copy = ha.machine.cache.get(b.home_address)
                assert copy is not None and copy.sequence == b.sequence



def _digests(ha):
    """The binding digest options of ``ha``'s next HELLO."""
    from haha.wire.options import BindingDigest

    return [o for o in ha.peering.hello_message(3).options if type(o) is BindingDigest]


def test_no_digest_in_hellos_while_switch_requests_are_out():
    """While its switch requests are out (its nodes re-registering, their refreshes held), a
    survivor's HELLOs carry no binding digest: each would differ from the peers' copies by
    design, and a difference in every HELLO for 10 s made a peer ask for every binding in
    the middle of the take-over. Once the requests are done, the digest is back, and it
    counts what the survivor holds."""
    ha, peer, mine, now = _taken_over(400)
    assert ha.switching and not _digests(ha)
    for h in mine:
        ha.switching.cancel(h)
    ha.tick(now + 1.0)
    back = _digests(ha)
    assert len(back) == 1 and back[0].count == ha.cache.primary_count == len(mine)


def test_a_peer_taking_over_is_not_repaired_meanwhile():
    """A home agent hearing, for 30 s, the HELLOs of a peer whose switch requests are out
    (no digest) while its copies of that peer differ from the peer's primaries asks nothing;
    digests that still differ once the peer's requests are done start the 10 s count, and
    then the repair comes (a real loss is still repaired)."""
    from haha.core.antientropy import DELAY
    from haha.core.homeagent import HomeAgent
    from haha.core.settings import HomeAgentSettings
    from test_takeover_split import PREFIX

    ha, peer, mine, now = _taken_over(400)
    s = HomeAgentSettings(address=OTHER, home_prefix=PREFIX, peers=(ME,), boot_wait=0)
    other = HomeAgent(s, __import__("random").Random(2))
    other.start(0.0)

    def hear(t):
        """``other`` hears ``ha``'s HELLO at ``t``: whether it decided a repair."""
        hello = ha.peering.hello_message(3)
        out = other.receive(Inbound(hello, ME, OTHER, None, None, ME), t)
        return any(type(e) is Event and e.name == "anti-entropy-repair" for e in out)

    hear(now)  # the peer comes alive (asked for everything once, as always)
    assert not any(hear(now + k) for k in range(1, 31))
    assert other.counters["anti-entropy-repairs"] == 0
    for h in mine:
        ha.switching.cancel(h)
    later = now + 31
    repaired = [k for k in range(int(DELAY) + 3) if hear(later + k)]
    assert repaired and repaired[0] >= DELAY and other.counters["anti-entropy-repairs"] == 1
