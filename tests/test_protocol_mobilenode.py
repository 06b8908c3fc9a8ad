"""The mobile node adapter's own paths (issue 11, the load generator's CPU per step): a packet
re-arms the node's one timer at once, and an event the log level discards goes to the
observers only, while one it shows is logged as before."""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from haha.core.homeagent import HomeAgent
from haha.core.mobilenode import MobileNode
from haha.core.settings import HomeAgentSettings, MobileNodeSettings
from haha.endpoint import HomeAgentEndpoint
from haha.logging import configure, logger
from haha.protocol import MobileNodeAdapter
from haha.security.keyring import NodeKeyring
from haha.security.keys import derive_node_secret
from haha.security.nodegroup import NodeGroup
from haha.security.policy import SecurityPolicy
from haha.security.sadb import SecurityAssociationDatabase
from haha.wire.numbers import DEFAULT_PROFILE

PREFIX = N("2001:db8:1::/64")
HA1 = A("2001:db8:1::1")
HOA = A("2001:db8:1::10")
COA = A("2001:db8:99::1")
SECRET = bytes(range(32))
NAMESPACE = "haha.test-mobile-node-adapter"


class Sent:
    def __init__(self):
        self.packets = []

    def start(self, receiver):
        self.receiver = receiver

    def send(self, packet, interface=None):
        self.packets.append(packet)

    def stop(self):
        pass


def home_agent(address, seed):
    """A started home agent pipeline at ``address`` serving the node group of SECRET."""
    ha = HomeAgentEndpoint(
        HomeAgent(HomeAgentSettings(address=address, home_prefix=PREFIX, boot_wait=0),
                  random.Random(seed)),
        DEFAULT_PROFILE, SecurityPolicy(DEFAULT_PROFILE), SecurityAssociationDatabase(),
        node_group=NodeGroup(SECRET, PREFIX, address))
    ha.start(0.0)
    ha.output()
    return ha


def pair():
    """A started node adapter (ESP, its keyring) sending to a real home agent pipeline."""
    ha = home_agent(HA1, 1)
    clock = Clock()
    clock.advance(100)
    sadb = SecurityAssociationDatabase()
    keyring = NodeKeyring(derive_node_secret(SECRET, HOA), HOA, sadb)
    machine = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix=PREFIX,
                                            home_agents=(HA1,)), random.Random(2))
    node = MobileNodeAdapter(machine, Sent(), clock, DEFAULT_PROFILE,
                             SecurityPolicy(DEFAULT_PROFILE), sadb, keyring=keyring,
                             log=logger(NAMESPACE))
    node.start_transport()
    node.running = True
    node.call(machine.start, clock.seconds(), care_of=COA)
    return node, clock, ha


def answer(ha, node, clock):
    """The home agent's answers to what the node sent, delivered to the node."""
    for packet in node.transport.packets:
        ha.receive(packet, clock.seconds())
    node.transport.packets.clear()
    for datagram in ha.datagrams_to_send():
        node.packet_received(datagram.data)


def test_an_acknowledgement_re_arms_the_nodes_timer_at_once():
    """Before the acknowledgement the one delayed call is the retransmission; right after it,
    without the clock moving, it is the machine's next deadline (the refresh), and no other
    call waits for a later turn of the reactor."""
    node, clock, ha = pair()
    calls = clock.getDelayedCalls()
    assert len(calls) == 1 and calls[0].getTime() == node.machine._retransmit_at
    answer(ha, node, clock)
    assert node.machine.state == "registered"
    calls = clock.getDelayedCalls()
    assert len(calls) == 1 and calls[0].getTime() == node.endpoint.next_timer()
    assert calls[0].getTime() == node.machine.next_deadline() > clock.seconds() + 10


def test_a_packet_the_machine_never_sees_moves_no_timer():
    """A packet dropped before the machine (damaged) leaves the armed timer as it was."""
    node, clock, _ = pair()
    before = clock.getDelayedCalls()
    node.packet_received(b"\x60" + bytes(47))
    assert clock.getDelayedCalls() == before and before[0].active()
    assert node.counters["packets-received"] == 1


def test_a_stopped_node_keeps_no_timer_after_a_packet():
    """A node that stopped running (its service stopping) keeps no delayed call after a packet
    reaches its machine."""
    node, clock, ha = pair()
    node.running = False
    answer(ha, node, clock)
    assert clock.getDelayedCalls() == []


def test_events_reach_the_observers_whatever_the_level_and_the_log_only_when_shown():
    """At level error the node's events (registered: info, state: debug) reach the observers
    and make no log record; at level debug the same events are logged as well, each with its
    fields, and still reach the observers."""
    records = []
    globalLogPublisher.addObserver(records.append)
    try:
        for level, logged in (("error", False), ("debug", True)):
            configure(level, NAMESPACE)
            node, clock, ha = pair()
            records.clear()
            seen = []
            node.observers.append(seen.append)
            answer(ha, node, clock)
            names = [e.name for e in seen]
            assert names == ["registered", "state"], names
            mine = [r for r in records if r.get("log_namespace") == NAMESPACE]
            if logged:
                assert [r["event"] for r in mine] == ["registered", "state"]
                assert mine[0]["home_agent"] == str(HA1) and mine[0]["care_of"] == str(COA)
            else:
                assert mine == []
    finally:
        globalLogPublisher.removeObserver(records.append)
        configure("info", NAMESPACE)


def spy_keyring(node):
    """Count the keyring's calls (``learn``, ``ensure``) while keeping what they do."""
    keyring = node.endpoint.keyring
    calls = {"learn": [], "ensure": []}
    for name in calls:
        real = getattr(keyring, name)

        def spy(address, *rest, _real=real, _name=name):
            calls[_name].append(address)
            return _real(address, *rest)
        setattr(keyring, name, spy)
    return calls


def test_the_keyring_is_asked_only_about_home_agents_without_sas():
    """A node's packets to and from a home agent it holds SAs with do not ask the keyring
    (the database's integer look-up answers first); a protected switch request from a home
    agent it has no SA with still makes the keyring derive that pair, so the request is
    authenticated and the node's Binding Update to it is protected."""
    from haha.core.effects import Send
    from haha.wire.mh import HaSwitchRequest
    from haha.wire.options import IPADDR_HOME_AGENT, IpAddress

    node, clock, ha = pair()
    calls = spy_keyring(node)
    answer(ha, node, clock)  # the acknowledgement from HA1, whose SAs the node holds
    assert node.machine.state == "registered"
    assert calls == {"learn": [], "ensure": []}
    ha2_address = A("2001:db8:1::2")
    ha2 = home_agent(ha2_address, 3)
    request = HaSwitchRequest((IpAddress(IPADDR_HOME_AGENT, ha2_address, 128),))
    ha2.apply([Send(request, ha2_address, COA, routing_address=HOA, protect=HOA)],
              clock.seconds())
    assert not node.sadb.has_peer(ha2_address)
    for datagram in ha2.datagrams_to_send():
        node.packet_received(datagram.data)
    assert calls["learn"] == [ha2_address]
    assert node.sadb.has_peer(ha2_address)
    assert node.machine.counters["switch-received"] == 1
    assert node.counters["received.HaSwitchRequest"] == 1
