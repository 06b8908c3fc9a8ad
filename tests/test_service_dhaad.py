"""DHAAD through the whole daemon path on the in-memory hub (ESP on, task.Clock): tier 2.

The three home agents of ``test_service.py`` and a mobile node configured WITHOUT any home agent.
On the hub, ha1's endpoint also owns the Home-Agents anycast address (standing for the link or
route that brings the request to one home agent; the kernel side is tier 3).

What is proved: the node discovers the home agents (reply by preference), registers with the
best, and keeps them as known home agents, so a take-over HASR from one it never talked to is
obeyed at once (draft 6.1) with SAs derived from its one secret (``NodeKeyring``); DHAAD
requests and replies, unprotected by policy (RFC 6275), are rate limited per source like
everything else; forged ones (wrong identifier, wrong destination, empty, multicast or
unspecified source, arbitrary bytes) crash nothing and change nothing.
"""

from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service import COA, HAS, Network

from haha.config import mobile_node_from_text
from haha.core.homeagent import home_agents_anycast
from haha.service import MobileNodeService
from haha.wire.icmpv6 import DhaadReply, DhaadRequest, decode_icmpv6, encode_icmpv6
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.numbers import ICMP6_DHAAD_REPLY, ICMP6_DHAAD_REQUEST

A = IPv6Address
ANYCAST = home_agents_anycast(IPv6Network("2001:db8:1::/64"))
ATTACKER = A("2001:db8:66::6")

MN_DHAAD = """\
[mobile-node]
home-address = 2001:db8:1::100
home-prefix = 2001:db8:1::/64
care-of-address = 2001:db8:20::100
lifetime = 60
[security]
key = {keys}/mn.key
"""


def dhaad_network(tmp_path, anycast_owner=0):
    """The network of test_service.py with a node that knows no home agent; the home agent at
    index ``anycast_owner`` (None: nobody) receives what is sent to the anycast address."""
    net = Network(tmp_path)
    net.mn = MobileNodeService.build(
        mobile_node_from_text(MN_DHAAD.format(keys=tmp_path), str(tmp_path / "mn-dhaad.conf")),
        net.clock, transport=net.mn_end)
    if anycast_owner is not None:
        net.ends[anycast_owner].add_address(ANYCAST)
    return net


@pytest.fixture
def dnet(tmp_path):
    n = dhaad_network(tmp_path)
    yield n
    for s in n.has + [n.mn]:
        if s.running:
            s.stopService()
    n.run(6)


def replies_in(log, dst=COA):
    out = []
    for _, data, _ in log:
        p = parse_packet(data)
        if p.next_header == 58 and p.payload[0] == ICMP6_DHAAD_REPLY and p.dst == dst:
            out.append(decode_icmpv6(p.payload, p.src, p.dst))
    return out


def request(identifier, src=COA, dst=ANYCAST, mobile_router=False):
    return build_packet(src, dst, 58, encode_icmpv6(DhaadRequest(identifier, mobile_router),
                                                     src, dst))


def reply(identifier, addresses, src=HAS[0], dst=COA):
    return build_packet(src, dst, 58, encode_icmpv6(DhaadReply(identifier, tuple(addresses)),
                                                     src, dst))


def test_discovery_registration_and_takeover_hasr_obeyed_at_once(dnet):
    """The node asks the anycast address, ha1 replies with ha1, ha2, ha3 by preference, the node
    registers with ha1 over ESP and knows all three. ha1 goes silent: ha2 takes over and its
    HASR (ESP with an SA the node derives on the spot from its secret) is obeyed at once: BU to
    ha2, no second DHAAD."""
    net = dnet
    net.start()
    mn = net.mn.status()
    assert mn["state"] == "registered" and mn["home_agent"] == str(HAS[0])
    assert mn["known_home_agents"] == [str(a) for a in HAS]
    (answer,) = replies_in(net.hub.log)
    assert answer.addresses == tuple(HAS)
    assert net.mn.adapter.keyring.derived == {HAS[0]}
    assert net.mn.counters()["sent.DhaadRequest"] == 1
    for other in net.ends[1:] + [net.mn_end]:
        net.hub.partition(net.ends[0], other)
    net.run(8)
    mn = net.mn.status()
    assert mn["state"] == "registered" and mn["home_agent"] == str(HAS[1])
    c = net.mn.counters()
    assert c["sent.DhaadRequest"] == 1 and c["received.HaSwitchRequest"] >= 1
    assert net.mn.adapter.keyring.derived == {HAS[0], HAS[1]}
    assert c.get("core-failed", 0) == 0


def test_requests_are_rate_limited_per_source(dnet):
    """300 DHAAD requests from one forged source at one instant: the burst (100) is answered,
    the rest dropped as rate-limited; another source is still answered."""
    net = dnet
    for s in net.has:
        s.startService()
    net.run(1.5)
    ha1 = net.has[0]
    before = len(net.hub.log)
    for i in range(300):
        ha1.adapter.packet_received(request(i + 1, src=ATTACKER))
    ha1.adapter.packet_received(request(7))
    net.run(0.1)
    assert ha1.adapter.counters["dropped.rate-limited"] == 200
    assert len(replies_in(net.hub.log[before:], dst=ATTACKER)) == 100
    assert len(replies_in(net.hub.log[before:])) == 1
    assert ha1.adapter.counters.get("core-failed", 0) == 0


@pytest.mark.parametrize("src", [A("ff02::1"), A("ff0e::1"), A("::")])
def test_requests_from_multicast_or_unspecified_sources_get_no_reply(dnet, src):
    """A request claiming a multicast or the unspecified source would make the home agent
    answer a group (or nobody): dropped as bad-source before the rate limiter."""
    net = dnet
    for s in net.has:
        s.startService()
    net.run(1.5)
    ha1 = net.has[0]
    before, tracked = len(net.hub.log), len(ha1.adapter.limiter)
    ha1.adapter.packet_received(request(5, src=src))
    net.run(0.1)
    assert ha1.adapter.counters["dropped.bad-source"] == 1
    assert replies_in(net.hub.log[before:], dst=src) == []
    assert len(ha1.adapter.limiter) == tracked


def test_forged_replies_change_nothing(tmp_path):
    """A node waiting for a DHAAD answer (nobody owns the anycast address) ignores replies with
    a wrong identifier, to another destination, with no global address, or from a flooding
    source beyond its rate limit; it is still discovering and knows no home agent."""
    net = dhaad_network(tmp_path, anycast_owner=None)
    net.mn.startService()
    net.run(0.5)
    mn = net.mn
    assert mn.status()["state"] == "discovering"
    (asked,) = [parse_packet(d) for _, d, _ in net.hub.log]
    assert asked.dst == ANYCAST and asked.payload[0] == ICMP6_DHAAD_REQUEST
    ident = decode_icmpv6(asked.payload, asked.src, asked.dst).identifier
    forged = [
        reply(ident ^ 1, [ATTACKER]),
        reply(ident, [ATTACKER], dst=A("2001:db8:20::999")),
        reply(ident, []),
        reply(ident, [A("fe80::1"), A("ff02::2"), A("::"), A("::1")]),
    ]
    for data in forged:
        mn.adapter.packet_received(data)
    assert mn.status()["state"] == "discovering" and mn.status()["known_home_agents"] == []
    c = mn.machine.counters
    assert c["dropped:dhaad-unmatched"] == 2 and c["dhaad-empty"] == 2
    for _ in range(200):
        mn.adapter.packet_received(reply(ident ^ 2, [ATTACKER], src=ATTACKER))
    assert mn.adapter.counters["dropped.rate-limited"] == 100
    assert mn.status()["known_home_agents"] == [] and mn.adapter.counters["core-failed"] == 0
    mn.stopService()


@pytest.fixture(scope="module")
def listening(tmp_path_factory):
    """A serving home agent and a node in discovery, for the fuzzing below."""
    net = dhaad_network(tmp_path_factory.mktemp("dhaad"), anycast_owner=None)
    for s in net.has:
        s.startService()
    net.run(1.5)
    net.mn.startService()
    net.run(0.5)
    return net


addresses = st.sampled_from([COA, ANYCAST, HAS[0], ATTACKER, A("fe80::1"), A("ff02::1"),
                             A("::"), A("::1")])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([ICMP6_DHAAD_REQUEST, ICMP6_DHAAD_REPLY]), src=addresses,
       dst=addresses, body=st.binary(max_size=120), fix_checksum=st.booleans())
def test_arbitrary_dhaad_messages_crash_nothing(listening, kind, src, dst, body, fix_checksum):
    """Any ICMPv6 144/145 (any body, any addresses, checksum right or wrong) fed to the home
    agent and the node is counted and handled or dropped; nothing raises or fails inside."""
    net = listening
    message = bytes((kind, 0, 0, 0)) + body
    if fix_checksum:
        from haha.wire import checksum

        c = checksum.checksum(src.packed, dst.packed, 58, message)
        message = message[:2] + c.to_bytes(2, "big") + message[4:]
    data = build_packet(src, dst, 58, message)
    for target in (net.has[0], net.mn):
        before = target.adapter.counters["packets-received"]
        target.adapter.packet_received(data)
        assert target.adapter.counters["packets-received"] == before + 1
        assert target.adapter.counters.get("core-failed", 0) == 0
    net.clock.advance(0.01)
    assert net.mn.status()["state"] in ("discovering", "registering")
