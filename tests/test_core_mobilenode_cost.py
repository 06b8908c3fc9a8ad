"""The mobile node machine's cheap comparisons (issue 11, the load generator's CPU per step):
addresses compared by their integers must say what ``==`` says, the node keeps the Home Agent
list's own address objects, and what it makes once per care-of address follows a move."""

import random
from ipaddress import IPv6Address as A

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haha.core.effects import Inbound, Send, TunnelUp
from haha.core.mobilenode import (
    REGISTERED,
    SWITCHING,
    MobileNode,
    global_scope,
    same_address,
)
from haha.core.settings import MobileNodeSettings
from haha.wire.mh import BindingAck, HaSwitchRequest, HomeAgentSwitch
from haha.wire.options import IPADDR_HOME_AGENT, AlternateCareOfAddress, IpAddress

from test_core_mobilenode import COA, COA2, HA1, HA2, HA3, HOA, PREFIX


def copy(a):
    """An address equal to ``a`` but another object (as the codec decodes one)."""
    return A(a.packed)


def node(home_agents=(HA1, HA2, HA3)):
    s = MobileNodeSettings(home_address=HOA, home_prefix=PREFIX, home_agents=home_agents)
    return MobileNode(s, random.Random(7))


def ba(m, src=None):
    """The acknowledgement of the node's last Binding Update, its addresses decoded afresh."""
    src = copy(src or m.target)
    return Inbound(BindingAck(0, m.sequence, 100), src, copy(m.care_of), None, copy(HOA),
                   copy(src))


def hasr(desired, src):
    return Inbound(HaSwitchRequest((IpAddress(IPADDR_HOME_AGENT, copy(desired)),)), copy(src),
                   copy(COA), None, copy(HOA), copy(src))


def registered(home_agents=(HA1, HA2, HA3)):
    m = node(home_agents)
    m.start(0.0, care_of=COA)
    m.receive(ba(m), 0.5)
    assert m.state == REGISTERED
    return m


SCOPED = [A("fe80::1%eth0"), A("fe80::1%eth1"), A("fe80::1"), A("2001:db8::1%2")]
SPECIAL = [A("::"), A("::1"), A("::2"), A("fe80::"), A("febf:ffff::1"), A("fec0::1"),
           A("feff::1"), A("fe7f::1"), A("ff02::1"), A("ff00::"), A("fc00::1"), A("2001:db8::1"),
           A("::ffff:127.0.0.1"), A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]


def reference_global(a):
    """Global scope as the ipaddress properties say it (the definition before issue 11)."""
    return not (a.is_link_local or a.is_multicast or a.is_unspecified or a.is_loopback
                or a.is_site_local)


@pytest.mark.parametrize("a", SPECIAL + SCOPED)
def test_global_scope_agrees_with_ipaddress_at_the_edges(a):
    """global_scope, read from the integer, says what the five ipaddress properties say at the
    edges of every range it excludes (::, ::1, fe80::/10, fec0::/10, ff00::/8) and just
    outside them."""
    assert global_scope(a) is reference_global(a)


@given(st.integers(0, (1 << 128) - 1))
def test_global_scope_agrees_with_ipaddress_everywhere(k):
    """... and on any address, with the top bits drawn so each range is hit often."""
    for top in (k, (0xFE8 << 116) | (k >> 12), (0xFEC << 116) | (k >> 12), (0xFF << 120) | (k >> 8),
                k >> 100):
        assert global_scope(A(top)) is reference_global(A(top))


@pytest.mark.parametrize("a", SPECIAL + SCOPED + [None])
@pytest.mark.parametrize("b", SPECIAL + SCOPED + [None])
def test_same_address_is_equality(a, b):
    """same_address(a, b) is ``a == b`` for addresses and None, scopes included (fe80::1%eth0
    is not fe80::1%eth1 nor fe80::1), whether or not the two are one object."""
    assert same_address(a, b) is (a == b)
    if a is not None:
        assert same_address(a, copy(a) if a.scope_id is None else A(str(a))) is True


def test_a_switch_request_leaves_the_node_with_its_own_home_agent_object():
    """The address a switch request names is decoded afresh; the node registers with the equal
    entry of its Home Agent list, that very object, so its target, the Binding Update's
    destination and, once accepted, its home agent and tunnel are the list's own (what later
    comparisons find by identity)."""
    m = registered()
    out = m.receive(hasr(HA2, HA1), 1.0)
    assert m.state == SWITCHING and m.target is HA2
    bu = [e for e in out if type(e) is Send]
    assert len(bu) == 1 and bu[0].dst is HA2 and bu[0].protect is HA2
    assert m._candidates == [HA1, HA3]
    out = m.receive(ba(m), 1.5)
    assert m.state == REGISTERED and m.home_agent is HA2
    tunnels = [e for e in out if type(e) is TunnelUp]
    assert len(tunnels) == 1 and tunnels[0].home_agent is HA2
    assert m.known_home_agents == [HA1, HA2, HA3]


def test_a_switch_request_for_a_home_agent_the_node_does_not_know_starts_discovery():
    """A desired home agent that is not in the list (equal to none of its entries) is not
    registered with: the node discovers (draft 5.3), as before."""
    m = registered()
    m.receive(hasr(A("2001:db8:1::99"), HA1), 1.0)
    assert m.state == "discovering"


def test_a_home_address_option_with_another_scope_is_not_the_home_address():
    """A switch request whose routing header names the home address with a zone (another
    address than the node's, for ``==``) is dropped as for another home address."""
    m = registered()
    inbound = Inbound(HaSwitchRequest((IpAddress(IPADDR_HOME_AGENT, HA2),)), HA1, COA, None,
                      A(f"{HOA}%1"), HA1)
    assert m.receive(inbound, 1.0) == []
    assert m.counters["dropped:switch-wrong-home-address"] == 1


def test_a_repeated_switch_request_is_recognised_from_an_equal_address():
    """A repeated request naming (a copy of) the home agent the node is switching to is
    ignored as under way, and one naming its home agent once registered there as already
    there, however the address object was made."""
    m = registered()
    m.receive(hasr(HA2, HA1), 1.0)
    assert m.receive(hasr(HA2, HA1), 1.1) == []
    assert m.counters["switch-already-underway"] == 1
    m.receive(ba(m), 1.5)
    assert m.receive(hasr(HA2, HA2), 2.0) == []
    assert m.counters["switch-already-there"] == 1


def test_home_agent_switch_with_several_addresses_takes_the_first_known_global_one():
    """RFC 5142 Home Agent Switch: the first listed address that is in the Home Agent list and
    of global scope is chosen, compared by value (copies)."""
    m = registered()
    msg = HomeAgentSwitch((copy(A("2001:db8:1::77")), copy(HA3), copy(HA2)))
    m.receive(Inbound(msg, copy(HA1), copy(COA), None, copy(HOA), copy(HA1)), 1.0)
    assert m.target is HA3


def test_an_acknowledgement_from_an_equal_address_is_accepted_and_another_is_not():
    """The acknowledgement's source, routing address and SA are checked by value: copies of the
    right addresses complete the registration, a different source is dropped."""
    m = node()
    m.start(0.0, care_of=COA)
    wrong = ba(m, src=HA2)
    assert m.receive(wrong, 0.1) == []
    assert m.counters["dropped:ba-wrong-source"] == 1
    m.receive(ba(m), 0.2)
    assert m.state == REGISTERED and m.home_agent is HA1


def test_a_refresh_with_the_same_tunnel_raises_no_tunnel_effect_and_a_move_does():
    """An accepted refresh from the same care-of address and home agent (decoded afresh) does
    not raise TunnelUp again; after a move it does, with the new care-of address."""
    m = registered()
    out = m.dispatch("refresh", 50.0)
    out = m.receive(ba(m), 50.1)
    assert [e for e in out if type(e) is TunnelUp] == []
    m.move(COA2, 60.0)
    out = m.receive(ba(m), 60.1)
    tunnels = [e for e in out if type(e) is TunnelUp]
    assert len(tunnels) == 1 and tunnels[0].care_of == COA2


def test_binding_updates_follow_the_care_of_address():
    """The Binding Update's fixed part (flags, lifetime, Alternate Care-of Address) is made once
    per care-of address: shared by two Binding Updates from one address, made again after a
    move (the new address in the option), each with its own sequence number."""
    m = registered()
    first = [e for e in m.dispatch("refresh", 50.0) if type(e) is Send][0].message
    m.receive(ba(m), 50.1)
    second = [e for e in m.dispatch("refresh", 100.0) if type(e) is Send][0].message
    assert second.options is first.options and second.sequence != first.sequence
    moved = [e for e in m.move(COA2, 110.0) if type(e) is Send][0]
    assert moved.src == COA2 and moved.message.options == (AlternateCareOfAddress(COA2),)
    assert moved.message.flags == first.flags and moved.message.lifetime == first.lifetime


def test_events_made_through_their_slots_are_what_they_were():
    """An Event built through its slots' setters (cheaper than object.__setattr__) holds its
    name and fields, stays immutable (no attribute can be set or added), and compares and
    hashes by name and fields."""
    from haha.core.effects import Event
    from haha.core.events import EventName

    e = Event(EventName.REGISTERED, home_agent=HA1, lifetime=60)
    assert e.name == "registered" and e.fields == {"home_agent": HA1, "lifetime": 60}
    assert e["lifetime"] == 60 and e.get("missing", 1) == 1
    for attribute in ("name", "fields", "other"):
        with pytest.raises(AttributeError):
            setattr(e, attribute, None)
    assert e.name == "registered"
    same = Event("registered", lifetime=60, home_agent=copy(HA1))
    assert same == e and hash(same) == hash(e)
    assert Event("registered", home_agent=HA2, lifetime=60) != e


LIST_POOL = [HA1, HA2, HA3, A("2001:db8:1::1%1"), A("fe80::1"), A("fe80::1%eth0"),
             A("2001:db8:1::4")]


@given(st.lists(st.sampled_from(LIST_POOL), max_size=6), st.sampled_from(LIST_POOL + [None]),
       st.booleans())
def test_known_is_the_first_equal_entry_of_the_home_agent_list(entries, wanted, fresh):
    """``_known`` (same_address inlined: integers first, then scopes) returns what a walk with
    ``==`` returns: the first entry of the Home Agent list equal to the address, that very
    object, or None; for the list's own objects and for copies decoded afresh, with zones
    (2001:db8:1::1%1 is not 2001:db8:1::1) and None."""
    m = node()
    m.known_home_agents = list(entries)
    probe = wanted
    if fresh and wanted is not None:
        probe = copy(wanted) if wanted.scope_id is None else A(str(wanted))
    expected = next((a for a in entries if a == probe), None) if probe is not None else None
    assert m._known(probe) is expected


def test_candidates_after_a_switch_request_are_the_other_entries_by_value():
    """After a switch request the node's remaining candidates are every entry of its Home Agent
    list not equal to the one it registers with: an equal copy in the list is left out, an
    address equal but for its zone is kept."""
    zoned = A(f"{HA2}%1")
    m = registered()
    m.known_home_agents = [HA1, HA2, copy(HA2), zoned, HA3]  # as DHAAD replies may leave it
    m.receive(hasr(HA2, HA1), 1.0)
    assert m.target is HA2
    assert m._candidates == [HA1, zoned, HA3]
    assert all(a is not HA2 for a in m._candidates)


@pytest.mark.parametrize("options, refresh", [
    ((), None),
    ("advice-sooner", 40.0),
    ("advice-later", None),
    ("other-option", None),
])
def test_the_refresh_follows_binding_refresh_advice_only_when_the_ack_carries_it(options,
                                                                                 refresh):
    """The refresh is at ``refresh_fraction`` of the granted lifetime unless the
    acknowledgement carries Binding Refresh Advice that asks sooner (RFC 6275 6.2.4, 11.7.3):
    an acknowledgement without options has none (the shortcut that skips looking for it),
    nor has one whose only option is another."""
    from haha.wire.options import BindingRefreshAdvice, NonceIndices

    m = node()
    m.start(0.0, care_of=COA)
    opts = {(): (), "advice-sooner": (BindingRefreshAdvice(10),),
            "advice-later": (BindingRefreshAdvice(1000),), "other-option": (NonceIndices(1, 2),)}[options]
    src = copy(m.target)
    m.receive(Inbound(BindingAck(0, m.sequence, 100, 0, opts), src, copy(COA), None,
                      copy(HOA), copy(src)), 0.5)
    assert m.state == REGISTERED
    default = 400 * m.settings.refresh_fraction  # 100 units of 4 s
    assert m._refresh_at == pytest.approx(0.5 + (refresh if refresh is not None else default))
