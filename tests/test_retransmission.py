"""A Binding Update retransmitted while its first copy waits in a loaded home agent's queue
costs one registration, not two (issue 11).

The node resends the same message, sequence number included (RFC 6275 11.8; haha's
``retransmit_same_sequence``); the home agent answers a Binding Update carrying the number of
the primary binding it holds, for the same care-of address and flags, from that binding: a BA
with status 0, that number and the granted lifetime, and nothing stored, copied to the peers,
logged as an event or sent to the backend (docs/core.md, "Registration"). Shown end to end on
the in-memory network (ESP, policy, three home agents), with the deployed nodes' new numbers as
the comparison.
"""

from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.core.effects import Event, Inbound, Send
from haha.core.homeagent import HomeAgent
from haha.core.settings import HomeAgentSettings
from haha.testing import Network
from haha.wire.mh import BU_A, BU_H, BindingAck, BindingInfoUpdate, BindingUpdate
from haha.wire.options import AlternateCareOfAddress

PREFIX = IPv6Network("2001:db8:1::/64")
HA1, HA2, HA3 = (IPv6Address(f"2001:db8:1::{i}") for i in (1, 2, 3))
HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:99::1")


def _slow_network(same):
    """Three home agents; one node whose round trip to ha1 (2 s) is longer than its first
    retransmission timeout (1.5 s), as when its BU waits in a loaded home agent's queue."""
    net = Network(seed=11)
    net.add_home_agents(3, home_prefix=PREFIX)
    net.run_for(20)  # boot wait and HELLOs
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[HA1],
                             retransmit_same_sequence=same)
    net.set_links(["mn"], ["ha1"], latency=1.0)
    return net, mn


def test_a_queued_bu_and_its_retransmission_cost_one_registration():
    """The retransmission reaches ha1 after the first copy was accepted: ha1 answers it as a
    duplicate, so one registration, one BIU to each peer and one ``binding-created``; the node
    is registered and every copy names ha1."""
    net, mn = _slow_network(same=True)
    ha1, ha2, ha3 = (net.nodes[n] for n in ("ha1", "ha2", "ha3"))
    before = {p: p.endpoint.counters["received.BindingInfoUpdate"] for p in (ha2, ha3)}
    mn.start(COA)
    net.run_for(5)
    assert mn.machine.state == "registered" and mn.machine.counters["bu-retransmitted"] == 1
    c = ha1.machine.counters
    assert (c["bu-accepted"], c["bu-duplicate"]) == (1, 1)
    assert ha1.endpoint.counters["sent.BindingAck"] == 2
    assert len(ha1.events_named("binding-created")) == 1
    for peer in (ha2, ha3):
        assert peer.endpoint.counters["received.BindingInfoUpdate"] - before[peer] == 1
        assert peer.machine.cache.get(HOA).primary == HA1


def test_with_new_numbers_each_copy_is_a_registration():
    """The comparison: a node sending a new number in each retransmission (as deployed nodes
    do) makes ha1 register twice and copy twice to each peer, for the same outcome."""
    net, mn = _slow_network(same=False)
    ha1, ha2 = net.nodes["ha1"], net.nodes["ha2"]
    before = ha2.endpoint.counters["received.BindingInfoUpdate"]
    mn.start(COA)
    net.run_for(5)
    assert mn.machine.state == "registered"
    c = ha1.machine.counters
    assert (c["bu-accepted"], c["bu-duplicate"]) == (2, 0)
    assert ha2.endpoint.counters["received.BindingInfoUpdate"] - before == 2


# -- the home agent's answer, on the core ---------------------------------------------------


def _ha():
    s = HomeAgentSettings(address=HA1, home_prefix=PREFIX, peers=(HA2, HA3), boot_wait=0,
                          max_binding_lifetime=600)
    ha = HomeAgent(s)
    ha.start(0.0)
    return ha


def _bu(ha, seq, now, lifetime=150, coa=COA, flags=BU_A | BU_H):
    bu = BindingUpdate(seq, flags, lifetime, (AlternateCareOfAddress(coa),))
    return ha.receive(Inbound(bu, coa, HA1, HOA, None, HOA), now)


def _ack(out):
    (ba,) = [e.message for e in out if type(e) is Send and type(e.message) is BindingAck]
    return ba


def test_the_same_number_is_answered_from_the_binding_and_changes_nothing():
    """Status 0, the number, the lifetime granted by the first copy (150 units asked, 600 s
    granted: 150); the binding (its expiry included), the events, the peers and the backend
    see nothing: the effects are exactly the one BA."""
    ha = _ha()
    _bu(ha, 7, 1.0)
    held = ha.cache.get(HOA)
    expires = held.expires
    out = _bu(ha, 7, 2.0)
    ba = _ack(out)
    assert (ba.status, ba.sequence, ba.lifetime) == (0, 7, 150)
    assert len(out) == 1 and not [e for e in out if type(e) is Event]
    assert ha.cache.get(HOA) is held and held.expires == expires
    assert ha.counters["bu-duplicate"] == 1 and ha.counters["bu-accepted"] == 1


@pytest.mark.parametrize("change", ["care-of", "flags", "deregistration"])
def test_the_same_number_with_other_contents_is_refused_with_135(change):
    """RFC 6275 9.5.1 otherwise: a BU with the number held but another care-of address, other
    flags, or lifetime 0 is not newer, so 135 carrying the number held, and nothing changes."""
    ha = _ha()
    _bu(ha, 7, 1.0)
    held = ha.cache.get(HOA)
    kw = {"care-of": {"coa": IPv6Address("2001:db8:99::2")}, "flags": {"flags": BU_H},
          "deregistration": {"lifetime": 0}}[change]
    out = _bu(ha, 7, 2.0, **kw)
    ba = _ack(out)
    assert (ba.status, ba.sequence) == (135, 7)
    assert ha.cache.get(HOA) is held and held.care_of == COA
    assert not [e for e in out if type(e) is Send and type(e.message) is BindingInfoUpdate]


def test_a_copy_holder_refuses_the_number_it_holds():
    """Only a primary answers a duplicate from its binding: a home agent holding a copy of the
    same number answers 135 (the node goes on with the next number, which takes it over)."""
    ha = _ha()
    ha.cache.store(HOA, COA, BU_A | BU_H, 7, 600.0, 601.0, (), HA2, HA2, 1.0, None)
    ba = _ack(_bu(ha, 7, 2.0))
    assert (ba.status, ba.sequence) == (135, 7)
