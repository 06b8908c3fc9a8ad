"""The home agent machine driven message by message with a fake clock: registration, every
check on the way, synchronisation, HELLO, switching, take-over, draining, DHAAD, RAs."""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.effects import (
    AdvertisePrefix,
    DrainComplete,
    Event,
    Inbound,
    InstallRoute,
    ProxyNd,
    RemoveRoute,
    Send,
    SendIcmp,
)
from haha.core.homeagent import HomeAgent, NotServing, home_agents_anycast
from haha.core.settings import HomeAgentSettings
from haha.wire.icmpv6 import (
    PI_R,
    DhaadReply,
    DhaadRequest,
    HomeAgentInformation,
    PrefixInformation,
    RouterAdvertisement,
)
from haha.wire.mh import (
    BA_R,
    BU_A,
    BU_H,
    BU_R,
    BindingAck,
    BindingError,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingUpdate,
    HaHello,
    HaSwitchRequest,
    HomeAgentSwitch,
    UnknownMessage,
)
from haha.wire.options import (
    IPADDR_HOME_ADDRESS,
    AlternateCareOfAddress,
    BceInfo,
    IpAddress,
    MobileNetworkPrefix,
)

PREFIX = N("2001:db8:1::/64")
ME = A("2001:db8:1::1")
P2 = A("2001:db8:1::2")
P3 = A("2001:db8:1::3")
HOA = A("2001:db8:1::10")
MR = A("2001:db8:1::20")
COA = A("2001:db8:99::1")
COA2 = A("2001:db8:99::2")


class Rig:
    """One home agent and helpers to feed it messages."""

    def __init__(self, boot_wait=0, peers=(P2, P3), alive=(P2, P3), synced=True, **kw):
        kw.setdefault("mobile_routers", {MR: [N("2001:db8:100::/40")]})
        self.settings = HomeAgentSettings(address=ME, home_prefix=PREFIX, peers=peers,
                                          boot_wait=boot_wait, **kw)
        self.ha = HomeAgent(self.settings, random.Random(5))
        self.now = 0.0
        self.out = self.ha.start(self.now)
        self.hello_seq = {}
        for p in alive:
            out = self.hello(p)
            if synced:
                self.answer_bulk(p, out)
            self.out = out

    def answer_bulk(self, peer, out=None):
        """``peer`` completes its answer to our bulk BIR (found in ``out``) with an end marker
        (a BIU with the request's identifier and no entries): it is then in sync."""
        for e in sends(self.out if out is None else out, BindingInfoRequest, peer):
            if e.message.home_address == A("::"):
                return self.feed(BindingInfoUpdate(e.message.identifier, ()), peer)
        return None

    def feed(self, message, src, dst=ME, home_address=None, routing_address=None,
             protected_by="auto"):
        if protected_by == "auto":
            protected_by = home_address or src
        self.out = self.ha.receive(Inbound(message, src, dst, home_address, routing_address,
                                           protected_by), self.now)
        return self.out

    def hello(self, peer, pref=0, lifetime=35, address=None):
        seq = self.hello_seq.get(peer, 100) + 1
        self.hello_seq[peer] = seq
        return self.feed(HaHello(seq, pref, lifetime, 10, 64, address or peer), peer)

    def bu(self, seq, hoa=HOA, coa=COA, lifetime=100, flags=BU_A | BU_H, prefixes=(),
           from_home=False):
        opts = (AlternateCareOfAddress(coa),) + tuple(MobileNetworkPrefix(p) for p in prefixes)
        msg = BindingUpdate(seq, flags, lifetime, opts)
        if from_home:
            return self.feed(msg, hoa)
        return self.feed(msg, coa, home_address=hoa)

    def at(self, t):
        self.now = t
        self.out = self.ha.tick(t)
        return self.out

    def run_to(self, t):
        out = []
        while True:
            d = self.ha.next_deadline()
            if d is None or d > t:
                break
            out += self.at(d)
        self.now = t
        return out

    def biu(self, src, *entries, ident=9):
        return self.feed(BindingInfoUpdate(ident, tuple(entries)), src)


def sends(out, kind=None, dst=None):
    return [e for e in out if type(e) is Send and (kind is None or type(e.message) is kind)
            and (dst is None or e.dst == dst)]


def events(out, name):
    return [e for e in out if type(e) is Event and e.name == name]


def only(items):
    assert len(items) == 1, items
    return items[0]


# -- registration ------------------------------------------------------------------------------


def test_registration_answers_to_the_care_of_with_a_routing_header():
    """An accepted BU is answered with a BA to the care-of address, type 2 routing header =
    home address, protected by the node's SA; the primary tunnels and proxies, and the binding
    goes to both live peers."""
    r = Rig()
    out = r.bu(7, lifetime=100)
    ba = only(sends(out, BindingAck))
    assert (ba.src, ba.dst, ba.routing_address, ba.home_address, ba.protect) == (
        ME, COA, HOA, None, HOA)
    assert (ba.message.status, ba.message.sequence, ba.message.lifetime, ba.message.flags) == (
        0, 7, 100, 0)
    route = only([e for e in out if type(e) is InstallRoute]).route
    assert (route.home_address, route.care_of, route.local, route.primary) == (HOA, COA, ME,
                                                                               True)
    assert ProxyNd(HOA, True) in out
    assert [e.dst for e in sends(out, BindingInfoUpdate)] == [P2, P3]
    assert only(events(out, "binding-created"))["sequence"] == 7
    b = r.ha.cache.get(HOA)
    assert (b.care_of, b.sequence, b.lifetime, b.expires, b.primary) == (COA, 7, 400, 400.0,
                                                                         None)


def test_refresh_and_move():
    """A refresh changes no duty; a new care-of address reinstalls the tunnel only."""
    r = Rig()
    r.bu(7)
    r.now = 10.0
    out = r.bu(8)
    assert [type(e).__name__ for e in out if type(e) is not Send] == []
    out = r.bu(9, coa=COA2)
    assert [e.route.care_of for e in out if type(e) is InstallRoute] == [COA2]
    assert not [e for e in out if type(e) is ProxyNd]
    assert only(events(out, "binding-updated"))["care_of"] == COA2


def test_duplicate_bu_is_answered_again_without_change():
    """The same BU twice (network duplicate): the second is answered, nothing else happens."""
    r = Rig()
    r.bu(7)
    out = r.bu(7)
    assert only(sends(out, BindingAck)).message.status == 0
    assert not sends(out, BindingInfoUpdate) and r.ha.counters["bu-duplicate"] == 1


def test_each_retransmission_with_a_new_number_is_answered():
    """Deployed nodes put seq+1 in every retransmission: each one is answered (docs/protocol.md 9)."""
    r = Rig()
    for seq in (40, 41, 42):
        assert only(sends(r.bu(seq), BindingAck)).message.sequence == seq


def test_old_sequence_gets_135_with_the_last_accepted_number():
    """A BU not newer than the binding: 135 carrying the number the HA holds."""
    r = Rig()
    r.bu(50)
    ba = only(sends(r.bu(49), BindingAck)).message
    assert (ba.status, ba.sequence) == (135, 50)


def test_rejections_are_answered_even_without_the_a_flag():
    """Status >= 128 is always answered; an accepted BU without A is not."""
    r = Rig()
    assert not sends(r.bu(1, flags=BU_H), BindingAck)
    out = r.bu(1, hoa=A("2001:db8:2::5"), flags=BU_H)
    assert only(sends(out, BindingAck)).message.status == 132


def test_mobile_router_ba_echoes_r_and_routes_the_prefixes():
    """A mobile router's BA carries R (docs/protocol.md 9) and its prefixes are forwarded."""
    r = Rig()
    out = r.bu(3, hoa=MR, flags=BU_A | BU_H | BU_R, prefixes=[N("2001:db8:100:1::/64")])
    ba = only(sends(out, BindingAck)).message
    assert ba.status == 0 and ba.flags & BA_R
    route = only([e for e in out if type(e) is InstallRoute]).route
    assert route.prefixes == (N("2001:db8:100:1::/64"),)
    assert r.ha.cache.lookup(A("2001:db8:100:1::99")).home_address == MR
    bce = only(sends(out, BindingInfoUpdate, P2)).message.entries[0]
    assert bce.prefixes == (N("2001:db8:100:1::/64"),)
    out = r.bu(4, hoa=MR, flags=BU_A | BU_H | BU_R, prefixes=[N("2001:db8:200::/48")])
    assert only(sends(out, BindingAck)).message.status == 142


def test_deregistration_from_the_home_link_deployed_form():
    """Back home, deployed nodes deregister from the home address without a Home Address
    option, lifetime 0, Alternate CoA = home address: accepted, answered to the home address,
    duties and the binding go, peers are told (lifetime 0)."""
    r = Rig()
    r.bu(7)
    out = r.feed(BindingUpdate(8, BU_A | BU_H, 0, (AlternateCareOfAddress(HOA),)), HOA)
    ba = only(sends(out, BindingAck))
    assert (ba.dst, ba.routing_address, ba.message.status, ba.message.lifetime) == (HOA, None,
                                                                                     0, 0)
    assert RemoveRoute(HOA) in out and ProxyNd(HOA, False) in out
    assert [e.message.entries[0].lifetime for e in sends(out, BindingInfoUpdate)] == [0, 0]
    assert HOA not in r.ha.cache
    out = r.feed(BindingUpdate(9, BU_A | BU_H, 0, ()), HOA)
    assert only(sends(out, BindingAck)).message.status == 133


def test_care_of_inside_the_home_prefix_is_tolerated_silently():
    """A node that has not noticed it is home registers a care-of in the home prefix: no
    binding, no rejection that would make it give up (docs/protocol.md 9)."""
    r = Rig()
    out = r.bu(1, coa=A("2001:db8:1::99"))
    assert not sends(out) and HOA not in r.ha.cache
    assert only(events(out, "dropped"))["reason"] == "care-of-in-home-prefix"


def test_bu_drops():
    """No H flag, an SA that is not the node's, and BUs while booting are dropped, counted."""
    r = Rig()
    assert not sends(r.bu(1, flags=BU_A))
    assert r.ha.counters["dropped:not-home-registration"] == 1
    r.feed(BindingUpdate(1, BU_A | BU_H, 10, ()), COA, home_address=HOA,
           protected_by=A("2001:db8:1::11"))
    assert r.ha.counters["dropped:sa-mismatch"] == 1
    booting = Rig(boot_wait=15)
    assert not sends(booting.bu(1)) and booting.ha.counters["dropped:booting"] == 1


def test_unknown_mh_type_gets_binding_error_status_2():
    """An unrecognised MH type is answered with Binding Error status 2 (RFC 6275 9.2)."""
    r = Rig()
    out = r.feed(UnknownMessage(99, bytes(2)), COA, home_address=HOA)
    be = only(sends(out, BindingError))
    assert (be.dst, be.message.status, be.message.home_address, be.protect) == (COA, 2, HOA,
                                                                              None)


def test_unexpected_messages_and_not_running():
    """A BA arriving at a home agent is dropped; nothing is processed before start."""
    r = Rig()
    r.feed(BindingAck(0, 1), COA)
    assert r.ha.counters["dropped:unexpected"] == 1
    ha = HomeAgent(r.settings, random.Random(1))
    ha.receive(Inbound(BindingUpdate(1), COA, ME, HOA), 0.0)
    assert ha.counters["dropped:not-running"] == 1 and ha.tick(5.0) == []


def test_binding_expiry_tells_the_peers():
    """A primary that expires loses its duties and is deleted at the peers too."""
    r = Rig()
    r.bu(1, lifetime=10)
    r.run_to(20.0)
    r.hello(P2)
    r.hello(P3)
    out = r.run_to(41.0)
    assert RemoveRoute(HOA) in out and ProxyNd(HOA, False) in out
    assert only(events(out, "binding-expired"))["primary"] is True
    deletions = [e.dst for e in sends(out, BindingInfoUpdate)
                 if e.message.entries[0].lifetime == 0]
    assert set(deletions) == {P2, P3}


# -- synchronisation ---------------------------------------------------------------------------


def bce(seq, coa=COA, lifetime=50, hoa=HOA, prefixes=()):
    return BceInfo(hoa, coa, BU_A | BU_H, seq, lifetime, prefixes)


def test_biu_creates_a_copy_naming_its_primary_and_is_acknowledged():
    """A BIU from a known peer records a Binding Cache Copy naming the sender; a BIA answers
    with the BIU's identifier. A home-link copy installs nothing."""
    r = Rig()
    out = r.biu(P2, bce(5), ident=321)
    bia = only(sends(out, BindingInfoAck))
    assert (bia.dst, bia.protect, bia.message.identifier, bia.message.status) == (P2, P2, 321, 0)
    b = r.ha.cache.get(HOA)
    assert (b.primary, b.sequence, b.lifetime) == (P2, 5, 200)
    assert not [e for e in out if type(e) in (InstallRoute, ProxyNd)]
    assert r.ha.snapshot()[HOA].primary == P2


def test_biu_older_than_held_is_rejected_and_corrected():
    """An older entry is refused (BIA 129) and does not overwrite; if we are its primary we
    send our state back to the sender."""
    r = Rig()
    out = r.bu(10)
    for e in sends(out, BindingInfoUpdate):
        r.feed(BindingInfoAck(e.message.identifier), e.dst)
    out = r.biu(P2, bce(9, coa=COA2))
    assert only(sends(out, BindingInfoAck)).message.status == 129
    assert r.ha.cache.get(HOA).care_of == COA
    correction = only(sends(out, BindingInfoUpdate, P2)).message.entries[0]
    assert (correction.sequence, correction.care_of_address) == (10, COA)
    out = r.biu(P2, bce(9, coa=COA2), ident=10)  # already on its way: not sent twice
    assert not sends(out, BindingInfoUpdate)


def test_biu_newer_than_our_primary_turns_it_into_a_copy():
    """The node registered elsewhere with a newer number: our primary becomes a copy of the
    new primary, our duties go, any switch request stops."""
    r = Rig()
    r.bu(10)
    r.ha.switch(HOA, r.now, desired=A("2001:db8:1::2"))
    out = r.biu(P2, bce(11, coa=COA2))
    assert only(sends(out, BindingInfoAck)).message.status == 0
    assert RemoveRoute(HOA) in out and ProxyNd(HOA, False) in out
    assert only(events(out, "primary-lost"))["to"] == P2
    assert r.ha.cache.get(HOA).primary == P2 and r.ha.cache.primary_count == 0
    assert not sends(r.run_to(30.0), HaSwitchRequest)
    assert r.ha.counters["switch-retransmitted"] == 0


def test_equal_sequence_is_settled_by_rank():
    """Two primaries with the same number: the better-ranked live one wins at every home agent
    (a dead one loses to any live one)."""
    r = Rig()
    r.biu(P3, bce(20))
    out = r.biu(P2, bce(20, coa=COA2))  # P2 ranks above P3 (same preference, lower address)
    assert only(sends(out, BindingInfoAck)).message.status == 0
    assert r.ha.cache.get(HOA).primary == P2
    out = r.biu(P3, bce(20))
    assert only(sends(out, BindingInfoAck)).message.status == 129
    r.bu(30, hoa=A("2001:db8:1::11"))
    out = r.biu(P2, bce(30, hoa=A("2001:db8:1::11")))
    assert only(sends(out, BindingInfoAck)).message.status == 129  # we (::1) rank above ::2


def test_biu_deletion_and_foreign_entries():
    """Lifetime 0 deletes (when not older); entries outside the home prefix are refused 130."""
    r = Rig()
    r.biu(P2, bce(5))
    out = r.biu(P2, bce(6, lifetime=0), bce(1, hoa=A("2001:db8:7::1")))
    assert HOA not in r.ha.cache
    assert only(sends(out, BindingInfoAck)).message.status == 130
    assert only(events(out, "binding-deleted"))["by"] == P2


def test_haha_messages_from_unknown_or_mismatched_sources_are_dropped():
    """HELLO/BIU/BIA/BIR from an address that is not a known peer, or protected by another
    peer's SA, are dropped and counted (draft 5.2, 5.4); unprotected ones too when required."""
    r = Rig()
    stranger = A("2001:db8:1::66")
    for msg in (HaHello(1, 0, 30, 10, 64, stranger), BindingInfoUpdate(1, (bce(1),)),
                BindingInfoAck(1), BindingInfoRequest(1)):
        assert not sends(r.feed(msg, stranger))
    assert r.ha.counters["dropped:unknown-peer"] == 4
    r.feed(BindingInfoUpdate(1, (bce(1),)), P2, protected_by=P3)
    assert r.ha.counters["dropped:sa-mismatch"] == 1 and HOA not in r.ha.cache
    strict = Rig(peer_protection_required=True)
    strict.feed(BindingInfoUpdate(1, (bce(1),)), P2, protected_by=None)
    assert strict.ha.counters["dropped:unprotected"] == 1


def test_bir_single_is_answered_only_by_the_primary():
    """A BIR for one home address or prefix is answered (with its identifier) only by the
    primary; copies keep quiet (draft 5.2)."""
    r = Rig()
    r.bu(4, hoa=MR, flags=BU_A | BU_H | BU_R, prefixes=[N("2001:db8:100:1::/64")])
    r.biu(P2, bce(2))
    ask = BindingInfoRequest(55, (IpAddress(IPADDR_HOME_ADDRESS, MR),))
    ans = only(sends(r.feed(ask, P3), BindingInfoUpdate))
    assert ans.message.identifier == 55 and ans.message.entries[0].home_address == MR
    by_prefix = BindingInfoRequest(56, (MobileNetworkPrefix(N("2001:db8:100:1::/64")),))
    assert only(sends(r.feed(by_prefix, P3), BindingInfoUpdate)).message.identifier == 56
    copy = BindingInfoRequest(57, (IpAddress(IPADDR_HOME_ADDRESS, HOA),))
    assert not sends(r.feed(copy, P3))
    r.feed(BindingInfoRequest(58, ()), P3)
    assert r.ha.counters["dropped:malformed-bir"] == 1


def test_bulk_bir_answers_all_primaries_then_the_marker():
    """A bulk BIR (::) gets every primary binding, then an empty BIU with its identifier."""
    r = Rig()
    r.bu(1)
    r.bu(1, hoa=A("2001:db8:1::11"))
    r.biu(P2, bce(3, hoa=A("2001:db8:1::12")))
    out = r.feed(BindingInfoRequest(77, (IpAddress(IPADDR_HOME_ADDRESS, A("::")),)), P3)
    (chunk,) = sends(out, BindingInfoUpdate)
    assert sorted(b.home_address for b in chunk.message.entries) == [HOA, A("2001:db8:1::11")]
    out = r.feed(BindingInfoAck(chunk.message.identifier), P3)
    marker = only(sends(out, BindingInfoUpdate))
    assert (marker.message.identifier, marker.message.entries) == (77, ())


def test_bulk_answer_sweeps_stale_copies():
    """When a bulk answer from a peer is complete, copies naming it that the answer did not
    refresh are removed: they were deleted while we were apart."""
    r = Rig(alive=())
    r.biu(P2, bce(1, hoa=A("2001:db8:1::30")))
    r.biu(P2, bce(1, hoa=A("2001:db8:1::31")))
    r.now = 5.0
    out = r.hello(P2)  # P2 comes alive: ask it for everything
    bir = only(sends(out, BindingInfoRequest, P2)).message
    assert bir.home_address == A("::")
    r.now = 6.0
    r.biu(P2, bce(2, hoa=A("2001:db8:1::30")), ident=1000)
    out = r.feed(BindingInfoUpdate(bir.identifier, ()), P2)
    assert only(events(out, "bulk-sync-complete"))["removed"] == 1
    assert set(r.ha.snapshot()) == {A("2001:db8:1::30")}
    assert not r.ha.busy()


# -- HELLO, peers, take-over -------------------------------------------------------------------


def test_hello_on_start_periodically_and_on_change():
    """HELLOs go to every configured peer at start, every interval, and at once when the
    preference changes; they carry the HA address and prefix length."""
    r = Rig(boot_wait=15, alive=())
    ha = HomeAgent(r.settings, random.Random(1))
    out = ha.start(0.0)
    hellos = sends(out, HaHello)
    assert [e.dst for e in hellos] == [P2, P3] and all(e.protect == e.dst for e in hellos)
    h = hellos[0].message
    assert (h.home_agent, h.prefix_length, h.lifetime, h.interval, h.preference) == (
        ME, 64, 35, 10, 0)
    assert ha.next_deadline() == 10.0
    assert len(sends(ha.tick(10.0), HaHello)) == 2
    out = ha.set_preference(7, 12.0)
    assert [e.message.preference for e in sends(out, HaHello)] == [7, 7]
    assert ha.set_preference(7, 12.5) == []
    with pytest.raises(ValueError):
        ha.set_preference(70000, 13.0)


def test_boot_wait_then_bulk_request_to_live_peers():
    """While booting a home agent listens, and asks each peer it hears for all its bindings at
    once (a restarted home agent relearns during its boot wait); at the end of the boot wait it
    serves without asking a peer that has answered again; peers that come up later are asked
    at once."""
    r = Rig(boot_wait=15, alive=(P2,), synced=False)
    assert r.ha.state == "booting"
    assert [e.dst for e in sends(r.out, BindingInfoRequest)] == [P2]
    r.answer_bulk(P2)
    out = r.run_to(15.0)
    assert r.ha.state == "serving"
    assert not sends(out, BindingInfoRequest)
    out = r.hello(P3)
    assert [e.dst for e in sends(out, BindingInfoRequest)] == [P3]
    assert [e.dst for e in sends(out, HaHello)] == [P3]  # greet the newcomer at once
    assert only(events(out, "peer-up"))["peer"] == P3


def test_boot_over_asks_no_peer_twice():
    """A peer heard while booting whose answer is still under way when the boot wait ends is
    not sent a second bulk request: only its first is retransmitted; a peer heard only at
    the end of the wait is asked then."""
    r = Rig(boot_wait=15, alive=(P2,), synced=False)
    (first,) = sends(r.out, BindingInfoRequest)
    out = r.run_to(15.0)
    assert r.ha.state == "serving"
    assert {e.message.identifier for e in sends(out, BindingInfoRequest, P2)} == \
        {first.message.identifier}
    assert sends(r.hello(P3), BindingInfoRequest, P3)


def test_stale_and_foreign_hellos_are_dropped():
    """A HELLO not newer than the last, or for another home prefix, changes nothing."""
    r = Rig()
    r.hello_seq[P2] -= 1
    r.hello(P2, pref=9)
    assert r.ha.counters["dropped:stale-hello"] == 1 and r.ha.peers.get(P2).preference == 0
    r.feed(HaHello(500, 0, 30, 10, 48, P2), P2)
    assert r.ha.counters["dropped:foreign-prefix"] == 1


def test_peer_death_take_over_by_the_first_ranked_survivor():
    """When a peer's HA lifetime passes without HELLO, the first-ranked live home agent turns
    its copies into primaries at once (tunnel, proxy ND), tells the peers and asks each node
    to switch to it."""
    r = Rig(peers=(A("2001:db8:1::0:5"), P3), alive=(A("2001:db8:1::0:5"), P3))
    dead = A("2001:db8:1::0:5")
    r.biu(dead, bce(5), bce(6, hoa=A("2001:db8:1::11")))
    r.at(20.0)
    r.hello(P3)  # P3 stays alive, dead goes silent
    r.run_to(34.9)
    out = r.at(35.0)
    assert only(events(out, "peer-down"))["peer"] == dead
    assert only(events(out, "take-over")).fields == {"peer": dead, "count": 2}
    assert {e.route.home_address for e in out if type(e) is InstallRoute} == {
        HOA, A("2001:db8:1::11")}
    assert ProxyNd(HOA, True) in out
    # both new primaries reach P3 (packed in one BIU: the take-over sends per slice)
    assert {b.home_address for e in sends(out, BindingInfoUpdate, P3)
            for b in e.message.entries} == {HOA, A("2001:db8:1::11")}
    # Switch requests are paced (switch_rate, 4,000/s): the first leaves at once, the second
    # a quarter of a millisecond later.
    first = sends(out, HaSwitchRequest)
    hasr = first + sends(r.run_to(35.001), HaSwitchRequest)
    assert len(first) == 1
    assert {e.routing_address for e in hasr} == {HOA, A("2001:db8:1::11")}
    assert all(e.message.desired_home_agent == ME and e.protect == e.routing_address
               for e in hasr)
    assert r.ha.cache.primary_count == 2
    # The HASR is repeated until the node registers again.
    out = r.run_to(37.5)
    assert len(sends(out, HaSwitchRequest)) == 2
    r.bu(6)
    out = r.run_to(45.0)
    assert {e.routing_address for e in sends(out, HaSwitchRequest)} == {A("2001:db8:1::11")}


def test_not_first_ranked_does_not_take_over():
    """A survivor that is not first-ranked leaves the nodes to the one that is."""
    r = Rig(preference=1)
    r.hello(P3, pref=5)
    r.biu(P2, bce(5))
    r.at(20.0)
    r.hello(P3, pref=5)
    out = r.run_to(36.0)
    assert events(out, "peer-down") and not events(out, "take-over")
    assert r.ha.cache.get(HOA).primary == P2


def test_hello_lifetime_zero_is_a_goodbye():
    """A peer that leaves (HELLO lifetime 0) is deleted at once."""
    r = Rig()
    out = r.hello(P2, lifetime=0)
    assert only(events(out, "peer-down"))["reason"] == "lifetime-zero"
    assert P2 not in r.ha.peers


def test_discovered_peers_need_authorisation():
    """Discovery only proposes: a peer outside the static list and the authorised prefixes
    is refused; an authorised one is greeted and becomes live by its own HELLO; discovery
    withdrawing a live peer changes nothing (unauthenticated), a silent candidate is
    forgotten."""
    r = Rig(authorised_peer_prefixes=[N("2001:db8:1::/120")])
    out = r.ha.add_peer(A("2001:db8:5::1"), 0.0)
    assert only(events(out, "peer-refused"))["peer"] == A("2001:db8:5::1")
    new = A("2001:db8:1::9")
    out = r.ha.add_peer(new, 0.0)
    assert [e.dst for e in sends(out, HaHello)] == [new]
    r.hello(new)
    assert new in r.ha.peers
    out = r.ha.remove_peer(new, 1.0)
    assert out == [] and new in r.ha.peers and r.ha.is_known_peer(new)
    assert r.ha.counters["peer-withdrawal-ignored:live"] == 1
    silent = A("2001:db8:1::a")
    r.ha.add_peer(silent, 1.0)
    assert r.ha.is_known_peer(silent)
    assert only(events(r.ha.remove_peer(silent, 2.0), "peer-forgotten"))["peer"] == silent
    assert not r.ha.is_known_peer(silent)
    assert r.ha.remove_peer(P2, 1.0) == []  # static peers stay


def test_router_advertisements_never_touch_liveness():
    """An RA (unauthenticated) never creates, refreshes or deletes a peer, whether the home
    agent sends HELLOs or not: an RA naming a phantom HA with preference 65535 adds nothing,
    one naming a live peer with lifetime 0 deletes nothing; RAs without H are counted apart."""
    peer = A("2001:db8:1::8")
    for hello in (True, False):
        r = Rig(authorised_peer_prefixes=[PREFIX], send_hello=hello)
        phantom = RouterAdvertisement(options=(HomeAgentInformation(0xFFFF, 600),
                                               PrefixInformation(peer, 64, flags=PI_R)))
        assert r.feed(phantom, A("fe80::8"), dst=A("ff02::1"), protected_by=None) == []
        assert peer not in r.ha.peers and peer not in r.ha.ranked()
        goodbye = RouterAdvertisement(options=(HomeAgentInformation(0, 0),
                                               PrefixInformation(P2, 64, flags=PI_R)))
        assert r.feed(goodbye, A("fe80::2"), dst=A("ff02::1"), protected_by=None) == []
        assert P2 in r.ha.peers and [a for a, _ in r.ha.ranked()] == [ME, P2, P3]
        r.feed(RouterAdvertisement(flags=0, options=phantom.options), A("fe80::8"),
               protected_by=None)
        assert r.ha.counters["ignored:not-home-agent-ra"] == 1
        assert r.ha.counters["ignored:ra-not-liveness"] == 2


# -- DHAAD ---------------------------------------------------------------------------------------


def test_dhaad_reply_lists_home_agents_by_preference():
    """Requests to the Home-Agents anycast address get the live home agents' addresses,
    highest preference first (RFC 6275 10.5.1); the R flag is echoed (RFC 3963 7)."""
    r = Rig(preference=5)
    r.hello(P2, pref=9)
    r.hello(P3, pref=1)
    anycast = home_agents_anycast(PREFIX)
    assert anycast == A("2001:db8:1:0:fdff:ffff:ffff:fffe")
    out = r.feed(DhaadRequest(33, True), COA, dst=anycast, protected_by=None)
    reply = only([e for e in out if type(e) is SendIcmp])
    assert (reply.src, reply.dst) == (ME, COA)
    assert reply.message == DhaadReply(33, (P2, ME, P3), True)
    r.feed(DhaadRequest(34), COA, dst=A("2001:db8:1::77"), protected_by=None)
    assert r.ha.counters["dropped:dhaad-wrong-destination"] == 1


def test_dhaad_ties_are_shuffled_by_the_injected_rng():
    """Equal preferences come in an order drawn from the injected generator: the same seed
    gives the same order, and over many draws every order appears."""
    orders = set()
    for seed in range(30):
        r = Rig()
        r.ha.rng.seed(seed)
        orders.add(tuple(r.ha.home_agent_addresses()))
    assert len(orders) == 6
    r1, r2 = Rig(), Rig()
    assert r1.ha.home_agent_addresses() == r2.ha.home_agent_addresses()


def test_anycast_for_other_prefix_lengths():
    """Non-/64 prefixes: all ones but the 7-bit anycast ID 0x7E (RFC 2526)."""
    assert home_agents_anycast(N("2001:db8::/48")) == A("2001:db8:0:ffff:ffff:ffff:ffff:fffe")


# -- operator requests ---------------------------------------------------------------------------


def test_switch_request_to_one_node():
    """The operator asks one node to switch: a HASR like a BA (care-of, routing header,
    node's SA), with the desired home agent when given; RFC 5142 form on request."""
    r = Rig()
    r.bu(1)
    out = r.ha.switch(HOA, 1.0, desired=P2)
    e = only(sends(out, HaSwitchRequest))
    assert (e.src, e.dst, e.routing_address, e.protect) == (ME, COA, HOA, HOA)
    assert e.message.desired_home_agent == P2
    with pytest.raises(KeyError):
        r.ha.switch(A("2001:db8:1::55"), 1.0)
    r5142 = Rig(switch_message="rfc5142")
    r5142.bu(1)
    e = only(sends(r5142.ha.switch(HOA, 1.0), HomeAgentSwitch))
    assert e.message.addresses == ()


def test_drain_spreads_nodes_and_reports_completion():
    """Draining: lowest preference in HELLO, HASR naming the live peers in turn, new BUs
    refused with 129, completion reported once every primary has gone."""
    r = Rig(preference=10)
    r.hello(P2, pref=10)
    r.hello(P3, pref=10)
    for i in range(4):
        r.bu(1, hoa=A(int(HOA) + i))
    out = r.ha.drain(1.0)
    assert [e.message.preference for e in sends(out, HaHello)] == [0, 0]
    out += r.run_to(1.001)  # the switch requests are paced, 4,000 a second
    desired = [e.message.desired_home_agent for e in sends(out, HaSwitchRequest)]
    assert desired == [P2, P3, P2, P3]
    assert only(sends(r.bu(1, hoa=A("2001:db8:1::40")), BindingAck)).message.status == 129
    assert sorted(r.ha.home_agent_addresses()) == [P2, P3]  # a draining HA leaves itself out
    out = []
    for i in range(4):
        out += r.biu(P2, bce(2, hoa=A(int(HOA) + i)))
    assert len(events(out, "drain-complete")) == 1
    with pytest.raises(NotServing):
        r.ha.drain(2.0)
    out = r.ha.resume(3.0)
    assert [e.message.preference for e in sends(out, HaHello)] == [10, 10]


def test_stop_says_goodbye():
    """Stopping sends HELLO lifetime 0 and withdraws the prefix (no home link)."""
    r = Rig(kind="no-home-link")
    ha = HomeAgent(r.settings, random.Random(2))
    assert AdvertisePrefix(PREFIX, True) in ha.start(0.0)
    out = ha.stop(1.0)
    assert [e.message.lifetime for e in sends(out, HaHello)] == [0, 0]
    assert AdvertisePrefix(PREFIX, False) in out
    assert ha.state == "stopped" and ha.stop(2.0) == [] and ha.tick(50.0) == []
    with pytest.raises(NotServing):
        ha.start(3.0)


def test_no_home_link_copies_forward_too():
    """Without a home link a copy installs a (non-primary) route and nobody proxies."""
    r = Rig(kind="no-home-link")
    out = r.biu(P2, bce(5))
    route = only([e for e in out if type(e) is InstallRoute]).route
    assert (route.primary, route.local) == (False, ME)
    out = r.bu(6)
    assert only([e for e in out if type(e) is InstallRoute]).route.primary is True
    assert not [e for e in out if type(e) is ProxyNd]


def test_request_binding_asks_every_live_peer():
    """request_binding sends a single BIR to each live peer."""
    r = Rig()
    out = r.ha.request_binding(1.0, home_address=HOA)
    assert [e.dst for e in sends(out, BindingInfoRequest)] == [P2, P3]
    with pytest.raises(ValueError):
        r.ha.request_binding(1.0)


def test_bulk_answer_returns_a_restarted_peers_bindings_and_it_takes_them_back():
    """A peer that asks for everything has lost its state: copies naming it go back to it in
    BIUs naming it (IP Address option, sub-type 3), and it makes them its primaries again."""
    r = Rig()
    r.biu(P2, bce(5))
    out = r.feed(BindingInfoRequest(88, (IpAddress(IPADDR_HOME_ADDRESS, A("::")),)), P2)
    (back,) = sends(out, BindingInfoUpdate, P2)
    assert back.message.options == (IpAddress(3, P2, 128),)
    assert [b.home_address for b in back.message.entries] == [HOA]
    restarted = Rig()  # ME, freshly started, gets its own binding back from P2
    out = restarted.feed(BindingInfoUpdate(5, back.message.entries, (IpAddress(3, ME, 128),)),
                         P2)
    assert only(events(out, "binding-restored"))["home_address"] == HOA
    assert restarted.ha.cache.get(HOA).primary is None
    assert ProxyNd(HOA, True) in out
    assert {e.dst for e in sends(out, BindingInfoUpdate)} == {P2, P3}


def test_is_known_peer_for_the_adapter():
    """Static peers and accepted discovered peers are known; others are not."""
    r = Rig(authorised_peer_prefixes=[N("2001:db8:1::/120")])
    assert r.ha.is_known_peer(P2) and not r.ha.is_known_peer(A("2001:db8:1::9"))
    r.ha.add_peer(A("2001:db8:1::9"), 0.0)
    assert r.ha.is_known_peer(A("2001:db8:1::9"))


def test_a_large_take_over_paces_its_switch_requests_and_jitters_their_retransmissions():
    """A take-over of 1,000 nodes at switch_rate 500/s: the first request leaves at once, the
    rest one every 2 ms (never more than two in any 2 ms), the last after about 2 s; the
    retransmissions do not come back in lockstep (their times are spread by the jitter)."""
    dead = A("2001:db8:1::0:5")
    r = Rig(peers=(dead, P3), alive=(dead, P3), switch_rate=500.0)
    hoas = [A(int(HOA) + 0x100 + i) for i in range(1000)]
    for i in range(0, 1000, 20):
        r.biu(dead, *[bce(5, hoa=h) for h in hoas[i:i + 20]], ident=i + 1)
    r.at(20.0)
    r.hello(P3)
    r.run_to(34.9)
    first = {}  # home address -> time of its first HASR
    again = []  # times of retransmissions

    def note(effects, when):
        for e in sends(effects, HaSwitchRequest):
            if e.routing_address in first:
                again.append(when)
            else:
                first[e.routing_address] = when

    out = r.at(35.0)  # the take-over's first slice (haha.core.slices) asks the first nodes
    assert len(sends(out, HaSwitchRequest)) == 1
    note(out, 35.0)
    while True:
        d = r.ha.next_deadline()
        if d is None or d > 37.5:
            break
        note(r.at(d), d)
    times = sorted(first.values())
    assert r.ha.counters["switch-paced"] == 999  # all but the first waited for their slot
    assert len(first) == 1000 and 36.9 < times[-1] < 37.1
    buckets = {}
    for x in times:
        k = int((x - 35.0) / 0.002 + 1e-9)
        buckets[k] = buckets.get(k, 0) + 1
    assert max(buckets.values()) <= 2
    assert len(again) > 100 and len(set(round(x, 4) for x in again)) > 0.9 * len(again)


def test_drain_complete_is_an_effect_returned_once():
    """The end of a drain is a DrainComplete effect (the service's drain waits for it, not
    for the event), returned with the last primary's departure and only once per drain;
    a drain that starts with no primary completes at once."""
    r = Rig(preference=10)
    r.hello(P2, pref=10)
    r.bu(1)
    r.bu(1, hoa=A(int(HOA) + 1))
    out = r.ha.drain(1.0)
    assert not [e for e in out if type(e) is DrainComplete]
    out = r.biu(P2, bce(2))
    assert not [e for e in out if type(e) is DrainComplete]  # one primary left
    out = r.biu(P2, bce(2, hoa=A(int(HOA) + 1)))
    assert [e for e in out if type(e) is DrainComplete] == [DrainComplete()]
    assert len(events(out, "drain-complete")) == 1
    out = r.biu(P2, bce(3, hoa=A(int(HOA) + 1)))
    assert not [e for e in out if type(e) is DrainComplete]
    empty = Rig()
    assert DrainComplete() in empty.ha.drain(1.0)


def test_biu_entries_outside_the_home_prefix_are_refused_on_both_sides():
    """A BIU entry whose home address lies outside the home prefix (just below or just above
    it) is not stored and the BIA says rejected-not-authorised; the entries of the prefix in
    the same BIU, its first and last address included, are stored as copies."""
    from haha.wire.mh import BIA_REJECTED_NOT_AUTHORISED

    r = Rig()
    below = A(int(PREFIX.network_address) - 1)
    above = A(int(PREFIX.broadcast_address) + 1)
    first, last = PREFIX.network_address, PREFIX.broadcast_address
    out = r.biu(P2, bce(1, hoa=below), bce(1, hoa=first), bce(1, hoa=above), bce(1, hoa=last))
    assert only(sends(out, BindingInfoAck)).message.status == BIA_REJECTED_NOT_AUTHORISED
    assert r.ha.cache.get(below) is None and r.ha.cache.get(above) is None
    assert r.ha.cache.get(first).primary == P2 and r.ha.cache.get(last).primary == P2
