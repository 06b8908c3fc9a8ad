"""The mobile node's short receive path (haha.nodeendpoint, issue 11) does what the general
pipeline does: the same packets, from real home agent pipelines, each field of the shape it
recognises damaged in turn, truncated, padded and replaced by random octets, delivered to a
:class:`~haha.nodeendpoint.NodeEndpoint` and to a :class:`~haha.endpoint.MobileNodeEndpoint`
built alike, leave the same counters, output, machine, SA databases, keyring and budgets."""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haha.core.effects import Event, Send
from haha.core.homeagent import HomeAgent
from haha.core.mobilenode import MobileNode
from haha.core.settings import HomeAgentSettings, MobileNodeSettings
from haha.endpoint import Datagram, HomeAgentEndpoint, MobileNodeEndpoint
from haha.nodeendpoint import NodeEndpoint
from haha.protocol import MobileNodeAdapter
from haha.security.keyring import NodeKeyring
from haha.security.keys import derive_node_secret
from haha.security.nodegroup import NodeGroup
from haha.security.policy import SecurityPolicy
from haha.security.sadb import SecurityAssociationDatabase
from haha.wire.ipv6 import build_packet
from haha.wire.mh import BindingAck, HaSwitchRequest, encode_mh
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_MH
from haha.wire.options import IPADDR_HOME_AGENT, IpAddress

PREFIX = N("2001:db8:1::/64")
HA1, HA2, HA4 = A("2001:db8:1::1"), A("2001:db8:1::2"), A("2001:db8:1::4")
HOA = A("2001:db8:1::10")
COA = A("2001:db8:99::1")
SECRET = bytes(range(32))


class Budgets:
    """An admission stand-in that records every question and refuses what it is told to."""

    def __init__(self, refuse_peers=False):
        self.asked = []
        self.refuse_peers = refuse_peers

    def unauthenticated(self, source, now):
        self.asked.append(("unauthenticated", source))
        return True

    def authenticated(self, peer, now):
        self.asked.append(("authenticated", peer))
        return not self.refuse_peers


def node_endpoint(cls, limiter=None):
    """A node (its SAs with HA1 and HA2, as `twistd haha-mn` derives them) started away."""
    sadb = SecurityAssociationDatabase()
    keyring = NodeKeyring(derive_node_secret(SECRET, HOA), HOA, sadb)
    for ha in (HA1, HA2):
        keyring.ensure(ha)
    machine = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix=PREFIX,
                                            home_agents=(HA1, HA2)), random.Random(7))
    ep = cls(machine, DEFAULT_PROFILE, SecurityPolicy(DEFAULT_PROFILE), sadb, limiter, keyring)
    ep.start(0.0, care_of=COA)
    return ep


def home_agent(address):
    ep = HomeAgentEndpoint(
        HomeAgent(HomeAgentSettings(address=address, home_prefix=PREFIX, boot_wait=0),
                  random.Random(int(address) & 0xFF)),
        DEFAULT_PROFILE, SecurityPolicy(DEFAULT_PROFILE), SecurityAssociationDatabase(),
        node_group=NodeGroup(SECRET, PREFIX, address))
    ep.start(0.0)
    ep.output()
    return ep


def switch_request(ha, named):
    ha.apply([Send(HaSwitchRequest((IpAddress(IPADDR_HOME_AGENT, named, 128),)), ha.machine.address,
                   COA, routing_address=HOA, protect=HOA)], 1.0)
    return [d.data for d in ha.datagrams_to_send()]


def corpus():
    """``(before, packet)`` pairs: what a node is given first, then the packet compared: the
    home agent's acknowledgement of its first Binding Update; after it, switch requests from
    HA2 (an SA the node holds) and from HA4 (one it must derive); an unprotected BA."""
    ep = node_endpoint(MobileNodeEndpoint)
    bu = [d.data for d in ep.datagrams_to_send()]
    ha1 = home_agent(HA1)
    ha1.receive(bu[0], 0.1)
    (ba,) = [d.data for d in ha1.datagrams_to_send()]
    hasr2 = switch_request(home_agent(HA2), HA2)
    hasr4 = switch_request(home_agent(HA4), HA4)
    seq = ep.machine.sequence
    clear = build_packet(HA1, COA, IPPROTO_MH, encode_mh(BindingAck(0, seq, 100), HA1, HOA),
                         routing_address=HOA)
    return [((), ba), ((ba,), hasr2[0]), ((ba,), hasr4[0]), ((), clear)]


CORPUS = corpus()


def variants(packet):
    """The packet, each of its first 72 octets changed (three ways), cut at every length up to
    72 and a few beyond, padded, its Payload Length changed."""
    out = [packet, packet + bytes(7)]
    for i in range(min(72, len(packet))):
        for v in (packet[i] ^ 0x01, packet[i] ^ 0x80, 0xFF):
            if v != packet[i]:
                out.append(packet[:i] + bytes((v,)) + packet[i + 1:])
    out += [packet[:n] for n in list(range(0, 72)) + [len(packet) - 1, len(packet) - 16]]
    plen = len(packet) - 40
    for p in (0, 8, 23, 24, 27, plen - 1, plen + 1, 0xFFFF):
        out.append(packet[:4] + p.to_bytes(2, "big") + packet[6:])
    return out


def snapshot(ep, limiter):
    """Everything a packet can change, comparable across two endpoints."""
    m = ep.machine
    out = []
    for item in ep.output():
        if type(item) is Datagram:
            out.append(("datagram", item.destination, item.source, len(item.data)))
        elif type(item) is Event:
            out.append(("event", item.name, tuple(sorted(item.fields.items()))))
        else:
            out.append(repr(item))
    return {"counters": dict(ep.counters), "output": out, "calls": ep.calls,
            "machine": (m.state, m.sequence, m.target, m.home_agent, m.expires,
                        m._retransmit_at, m._refresh_at, dict(m.counters)),
            "sadb": (ep.sadb.describe(), dict(ep.sadb.counters)),
            "keyring": sorted(ep.keyring.derived),
            "limiter": list(limiter.asked) if limiter is not None else None}


def both(before, packet, limiter=None):
    """Deliver ``before`` then ``packet`` to a general and a short-path node; their snapshots."""
    shots = []
    for cls in (MobileNodeEndpoint, NodeEndpoint):
        budgets = None if limiter is None else Budgets(**limiter)
        ep = node_endpoint(cls, budgets)
        for data in before:
            ep.receive(data, 0.5)
        ep.output()
        ep.receive(packet, 1.5)
        shots.append(snapshot(ep, budgets))
    return shots


@pytest.mark.parametrize("case", range(len(CORPUS)))
@pytest.mark.parametrize("limiter", [None, {}, {"refuse_peers": True}])
def test_every_variant_of_a_home_agents_packet_is_handled_as_by_the_general_path(case, limiter):
    """Each variant of each corpus packet (every early octet changed, cut, padded, its
    Payload Length changed), with no admission, with one that admits and with one that
    refuses the authenticated peer: the short path leaves exactly what the general path
    leaves (counters, output, the machine, SA databases and windows, keyring, budgets)."""
    before, packet = CORPUS[case]
    for data in variants(packet):
        general, short = both(before, data, limiter)
        assert short == general, data.hex()


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(CORPUS) - 1), st.integers(0, 120), st.binary(max_size=80))
def test_random_octets_after_a_valid_prefix_are_handled_as_by_the_general_path(case, keep, tail):
    """A corpus packet's first ``keep`` octets followed by random ones: both paths agree."""
    before, packet = CORPUS[case]
    general, short = both(before, packet[:keep] + tail)
    assert short == general


def test_the_short_path_takes_the_home_agents_answers(monkeypatch):
    """The acknowledgement and the switch request from a home agent the node holds SAs with
    are handled without the general path (so the comparisons above compare two paths), and
    the node registers, then switches; a packet of another shape (unprotected) goes to the
    general path."""
    general = []
    real = MobileNodeEndpoint.receive

    def counting(self, data, now):
        if type(self) is NodeEndpoint:
            general.append(data)
        return real(self, data, now)
    monkeypatch.setattr(MobileNodeEndpoint, "receive", counting)
    (_, ba), (_, hasr2), _, (_, clear) = CORPUS
    ep = node_endpoint(NodeEndpoint)
    ep.output()
    ep.receive(ba, 0.5)
    assert ep.machine.state == "registered" and ep.machine.home_agent == HA1
    ep.receive(hasr2, 1.0)
    assert ep.machine.state == "switching" and ep.machine.target == HA2
    assert general == []
    ep.receive(clear, 1.2)
    assert general == [clear]


def test_the_node_adapter_runs_the_short_path():
    """The node adapter (daemon and load generator) builds its pipeline with the short path."""
    machine = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix=PREFIX,
                                            home_agents=(HA1,)), random.Random(1))
    adapter = MobileNodeAdapter(machine, None, None, DEFAULT_PROFILE,
                                SecurityPolicy(DEFAULT_PROFILE), SecurityAssociationDatabase())
    assert type(adapter.endpoint) is NodeEndpoint


def test_a_replayed_answer_is_dropped_by_both_paths():
    """The same acknowledgement twice: the second is a replay for the SA's window on both
    paths (the short path keeps the window)."""
    _, ba = CORPUS[0]
    general, short = both((ba,), ba)
    assert short == general
    assert short["counters"].get("dropped.replay") == 1



@pytest.mark.parametrize("cls", [MobileNodeEndpoint, NodeEndpoint])
def test_esp_claiming_the_nodes_own_home_address_is_counted_and_dropped(cls):
    """A packet under a known SPI whose source is the node's own home address (a forgery:
    no home agent has that address) is dropped and counted as from the wrong source by both
    receive paths; before, the keyring's derivation raised out of receive."""
    ep = node_endpoint(cls)
    ep.output()
    ha = home_agent(HA1)
    ha.apply([Send(HaSwitchRequest((IpAddress(IPADDR_HOME_AGENT, HA2, 128),)), HA1, COA,
                   routing_address=HOA, protect=HOA)], 1.0)
    (sent,) = ha.datagrams_to_send()
    forged = bytearray(sent.data)
    forged[8:24] = HOA.packed  # the source: the node's own home address
    ep.receive(bytes(forged), 1.0)
    assert ep.counters["dropped.wrong-source"] == 1
    assert not ep.keyring.sadb.has_peer(HOA)
