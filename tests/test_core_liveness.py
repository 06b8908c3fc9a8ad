"""Peer liveness only from what is authenticated (issue 9): ranking only peers in sync, the
bounded candidate table, no Binding Error from a group address, bounded link discovery and
throttled logging."""

from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

from twisted.internet.task import Clock

from haha.core import candidates
from haha.core.candidates import KnownPeers
from haha.core.effects import SendIcmp
from haha.discovery.link import LinkDiscovery
from haha.logthrottle import LogThrottle
from haha.wire.icmpv6 import RA_H, DhaadRequest, HomeAgentInformation, PI_R, PrefixInformation
from haha.wire.icmpv6 import RouterAdvertisement
from haha.wire.mh import BindingError, BindingInfoAck, BindingInfoRequest, BindingInfoUpdate
from haha.wire.mh import UnknownMessage
from haha.wire.options import IPADDR_HOME_ADDRESS, BceInfo, IpAddress

from test_core_homeagent import COA, HOA, ME, P2, P3, PREFIX, Rig, events, only, sends

ANYCAST = A("2001:db8:1:0:fdff:ffff:ffff:fffe")


def _copy_of(r, peer, hoa=HOA):
    r.biu(peer, BceInfo(hoa, COA, 0xC000, 1, 100))


def test_an_unsynced_peer_is_never_ranked_for_take_over():
    """P2 (preference 9) is live by HELLO but never answered our bulk request: when P3 dies,
    this home agent ranks itself first and takes over; with P2 in sync it leaves it to P2."""
    for p2_synced, taken in ((False, True), (True, False)):
        r = Rig(alive=(P3,))
        out = r.hello(P2, pref=9)
        if p2_synced:
            r.answer_bulk(P2, out)
        _copy_of(r, P3)
        r.now = 20.0
        r.hello(P2, pref=9)
        out = r.run_to(36.0)
        assert only(events(out, "peer-down"))["peer"] == P3
        assert bool(events(out, "take-over")) is taken
        assert [a for a, _ in r.ha.ranked()] == ([P2, ME] if p2_synced else [ME])


def test_a_peer_that_lost_its_state_is_unranked_until_it_has_our_answer():
    """A live, synced peer that asks for every binding (it restarted) holds no copies: it is
    unranked and left out of DHAAD replies until it acknowledges the end marker of our
    answer."""
    r = Rig(preference=1)
    r.hello(P2, pref=9)
    assert [a for a, _ in r.ha.ranked()][0] == P2
    out = r.feed(BindingInfoRequest(77, (IpAddress(IPADDR_HOME_ADDRESS, A("::")),)), P2)
    assert P2 not in [a for a, _ in r.ha.ranked()]
    reply = only([e for e in r.feed(DhaadRequest(1), COA, dst=ANYCAST, protected_by=None)
                  if type(e) is SendIcmp])
    assert P2 not in reply.message.addresses and ME in reply.message.addresses
    marker = only([e for e in sends(out, BindingInfoUpdate, P2) if not e.message.entries])
    r.feed(BindingInfoAck(marker.message.identifier), P2)
    assert [a for a, _ in r.ha.ranked()][0] == P2
    reply = only([e for e in r.feed(DhaadRequest(2), COA, dst=ANYCAST, protected_by=None)
                  if type(e) is SendIcmp])
    assert reply.message.addresses[0] == P2


def test_a_restarted_peer_must_answer_again():
    """A HELLO far behind the last one (the peer restarted with a new random sequence) makes
    the peer unsynced and asks it again for its bindings."""
    r = Rig()
    assert P2 in [a for a, _ in r.ha.ranked()]
    r.hello_seq[P2] = 100 - 64 - 1 - 1
    out = r.hello(P2)
    assert only(events(out, "peer-restarted"))["peer"] == P2
    assert P2 not in [a for a, _ in r.ha.ranked()]
    assert r.answer_bulk(P2, out) is not None
    assert P2 in [a for a, _ in r.ha.ranked()]


def test_dhaad_never_lists_an_unsynced_or_unknown_home_agent():
    """DHAAD replies list this home agent and the peers in sync only; an RA naming a phantom
    home agent with preference 65535 does not get it listed."""
    r = Rig(alive=(P3,), authorised_peer_prefixes=[PREFIX])
    r.hello(P2, pref=9)  # live, never answered
    phantom = A("2001:db8:1::66")
    r.feed(RouterAdvertisement(options=(HomeAgentInformation(0xFFFF, 600),
                                         PrefixInformation(phantom, 64, flags=PI_R))),
           A("fe80::66"), dst=A("ff02::1"), protected_by=None)
    reply = only([e for e in r.feed(DhaadRequest(5), COA, dst=ANYCAST, protected_by=None)
                  if type(e) is SendIcmp])
    assert sorted(reply.message.addresses) == [ME, P3]


def test_the_candidate_table_is_bounded():
    """Discovery proposing thousands of authorised addresses holds at most max_candidates;
    the rest are refused and counted; a candidate silent for a HA lifetime makes room, a
    live one never does."""
    r = Rig(authorised_peer_prefixes=[PREFIX], max_candidates=8, ha_lifetime=30)
    for i in range(2000):
        r.ha.add_peer(A(f"2001:db8:1::1:{i:x}"), 0.0)
    assert r.ha.peering.known.candidates == 8 and len(r.ha.peering.known) == 10
    assert r.ha.counters["peer-refused:candidates-full"] == 1992
    first = A("2001:db8:1::1:0")
    r.hello(first)  # a real candidate answers: live from its own HELLO
    assert first in r.ha.peers
    late = A("2001:db8:1::2:1")
    out = r.ha.add_peer(late, 31.0)
    assert only(events(out, "peer-known"))["peer"] == late
    assert first in r.ha.peering.known and A("2001:db8:1::1:1") not in r.ha.peering.known
    assert r.ha.peering.known.candidates == 8


def test_known_peers_table_on_its_own():
    """KnownPeers: static peers always known and never counted as candidates; KNOWN for a
    repeat; FULL when every candidate is recent; discard leaves static peers."""
    live = set()
    k = KnownPeers([P2], 2, 10.0, live.__contains__)
    assert k.add(P2, 0.0) == candidates.KNOWN
    assert k.add(P3, 0.0) == candidates.ADDED and k.add(P3, 1.0) == candidates.KNOWN
    assert k.add(HOA, 0.0) == candidates.ADDED
    assert k.add(COA, 5.0) == candidates.FULL
    live.add(P3)
    assert k.add(COA, 10.0) == candidates.ADDED and P3 in k and HOA not in k
    k.discard(P2)
    assert P2 in k and set(k) == {P2, P3, COA}


def test_no_binding_error_from_a_group_address():
    """An unknown MH type sent to ff02::1 (or to ::) is dropped, not answered with a Binding
    Error whose source would be the group; sent to this home agent it is answered."""
    r = Rig()
    for dst in (A("ff02::1"), A("::")):
        out = r.feed(UnknownMessage(99, bytes(2)), COA, dst=dst, protected_by=None)
        assert not sends(out, BindingError)
    assert r.ha.counters["dropped:unknown-mh-to-group"] == 2
    be = only(sends(r.feed(UnknownMessage(99, bytes(2)), COA, protected_by=None),
                    BindingError))
    assert be.src == ME


def test_link_discovery_is_bounded():
    """An RA flood naming 5,000 phantom home agents: link discovery tracks at most its
    limit, proposes no more, and counts the rest."""
    clock = Clock()
    link = LinkDiscovery(clock, limit=16)
    seen = []

    class Listener:
        def peer_appeared(self, address, source):
            seen.append(address)

        def peer_disappeared(self, address, source):
            pass

    link.start(Listener())
    for i in range(5000):
        link.router_advertisement(A("fe80::1"), RouterAdvertisement(
            flags=RA_H, options=(PrefixInformation(A(f"2001:db8:1::3:{i:x}"), 64, flags=PI_R),
                                 HomeAgentInformation(1, 600))))
    assert len(seen) == 16 and len(link.peers()) == 16
    assert link.counters == {"ignored": 0, "refused": 4984, "unwanted": 0, "tracked": 16}
    assert len(clock.getDelayedCalls()) == 16
    clock.advance(601)
    assert link.counters["tracked"] == 0


def test_log_throttle_one_line_per_key_per_interval():
    """The first line for a key passes, the rest within the interval are counted, and the
    next line after it reports how many were held back; keys are bounded."""
    t = LogThrottle(interval=60.0, max_keys=2)
    assert t.allow("link", 0.0) == 0
    assert [t.allow("link", s) for s in (1.0, 2.0, 59.0)] == [None, None, None]
    assert t.allow("dns", 1.0) == 0
    assert t.allow("link", 60.0) == 3
    assert t.suppressed == 3
    t.allow("x", 61.0)
    assert len(t._keys) == 2


def test_biu_from_an_unsynced_peer_is_still_applied():
    """Being unsynced only keeps a peer out of the ranking: its copies and BIAs are handled
    as before (the ordinary synchronisation goes on)."""
    r = Rig(alive=(P3,))
    r.hello(P2)
    out = r.biu(P2, BceInfo(A("2001:db8:1::30"), COA, 0xC000, 1, 100))
    assert only(sends(out, BindingInfoAck)).message.status == 0
    assert r.ha.cache.get(A("2001:db8:1::30")).primary == P2
    assert events(out, "copy-created") and not events(out, "peer-down")


def test_link_discovery_tracks_only_what_could_be_accepted():
    """With a ``wanted`` predicate (keyed peers under ESP), advertised addresses without a key
    are counted and never tracked, so phantoms cannot crowd a real peer out of the table; the
    plugin factory builds the predicate from the configuration."""
    from types import SimpleNamespace

    from haha.discovery.link import build

    clock = Clock()
    real = A("2001:db8:1::2")
    link = LinkDiscovery(clock, limit=4, wanted={real}.__contains__)
    seen = []

    class Listener:
        def peer_appeared(self, address, source):
            seen.append(address)

        def peer_disappeared(self, address, source):
            pass

    link.start(Listener())
    for i in range(100):
        link.router_advertisement(A("fe80::1"), RouterAdvertisement(
            flags=RA_H, options=(PrefixInformation(A(f"2001:db8:1::3:{i:x}"), 64, flags=PI_R),
                                 HomeAgentInformation(1, 600))))
    link.router_advertisement(A("fe80::2"), RouterAdvertisement(
        flags=RA_H, options=(PrefixInformation(real, 64, flags=PI_R),
                             HomeAgentInformation(1, 600))))
    assert seen == [real] and link.counters["unwanted"] == 100
    esp = SimpleNamespace(address=A("2001:db8:1::1"), haha_address=A("2001:db8:1::1"),
                          max_candidates=8, security=SimpleNamespace(
                              mode="esp", peer_keys={real: None}))
    lab = SimpleNamespace(address=A("2001:db8:1::1"), haha_address=A("2001:db8:1::1"),
                          max_candidates=8, peers=(), authorised=(N("2001:db8:1::/120"),),
                          security=SimpleNamespace(mode="none", peer_keys={}))
    built = build(None, clock, esp)
    assert built.limit == 8 and built.wanted(real) and not built.wanted(A("2001:db8:1::3"))
    built = build(None, clock, lab)
    assert built.wanted(A("2001:db8:1::3")) and not built.wanted(A("2001:db8:1::1:0"))


def test_a_restarted_peer_without_copies_does_not_stop_the_take_over():
    """The issue's case: P2 (preference 9, ranked first) restarts and asks for everything;
    P3, primary of a node, dies before P2 has our answer. This home agent does not defer to
    P2 (which holds no copy): it takes the node over itself."""
    r = Rig(alive=(P3,))
    r.hello(P2, pref=9)
    r.answer_bulk(P2)
    _copy_of(r, P3)
    assert [a for a, _ in r.ha.ranked()][0] == P2
    r.now = 10.0
    r.feed(BindingInfoRequest(5, (IpAddress(IPADDR_HOME_ADDRESS, A("::")),)), P2)
    r.now = 20.0
    r.hello(P2, pref=9)
    out = r.run_to(36.0)
    assert only(events(out, "take-over"))["peer"] == P3
    assert r.ha.cache.get(HOA).primary is None
