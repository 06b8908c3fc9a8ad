"""A running home agent applies RFC 8200's option and header-order rules to what it receives.

Packets are fed to the adapter of a home agent of the in-memory network (``test_service``): one
whose destination option asks for a report is dropped, counted and answered with an ICMPv6
Parameter Problem from the home agent's address; a silent-discard option is dropped without an
answer; and a flood of such packets is answered only within the global budget, whatever their
sources.
"""

import struct
from ipaddress import IPv6Address

from haha.wire.icmpv6 import ParameterProblem, decode_icmpv6
from haha.wire.ipv6 import parse_packet
from test_service import HAS, Network

MH = bytes((59, 0, 0, 0, 0, 0, 0, 0))


def _packet(src, dst, option_type):
    dstopts = bytes((135, 0, option_type, 2, 0, 0, 1, 0))  # the option, then PadN of 2
    rest = dstopts + MH
    return struct.pack("!IHBB", 6 << 28, len(rest), 60, 64) + src.packed + dst.packed + rest


def _answers(net, start):
    out = []
    for sender, packet, _ in net.hub.log[start:]:
        p = parse_packet(packet)
        if p.next_header == 58:
            m = decode_icmpv6(p.payload, p.src, p.dst)
            if type(m) is ParameterProblem:
                out.append((sender, p.src, p.dst, m))
    return out


def test_reported_silent_and_rate_limited(tmp_path):
    """Action 10 gets a Parameter Problem (code 2, pointer 42, from the home agent to the
    sender); action 01 gets nothing; 100 packets from 100 sources get at most the budget's
    burst of answers, the rest counted as rate-limited."""
    net = Network(tmp_path)
    net.start()
    ha = net.has[0]
    counters = ha.adapter.counters
    sender = IPv6Address("2001:db8:9::9")
    start = len(net.hub.log)
    ha.adapter.packet_received(_packet(sender, HAS[0], 0x9E))
    answers = _answers(net, start)
    assert len(answers) == 1
    _, src, dst, m = answers[0]
    assert (src, dst, m.code, m.pointer) == (HAS[0], sender, 2, 42)
    assert counters["dropped.unrecognised-option"] == 1

    start = len(net.hub.log)
    ha.adapter.packet_received(_packet(sender, HAS[0], 0x5E))
    assert _answers(net, start) == []
    assert counters["dropped.unrecognised-option"] == 2
    assert counters["parameter-problem-not-sent.silent"] == 1

    start = len(net.hub.log)
    for i in range(100):
        ha.adapter.packet_received(_packet(IPv6Address(f"2001:db8:9::{i + 1:x}"), HAS[0], 0x9E))
    sent = len(_answers(net, start))
    assert 1 <= sent <= ha.adapter.error_budget.burst
    assert counters["parameter-problem-not-sent.rate-limited"] == 100 - sent
    net.run(2)
    assert net.mn.status()["state"] == "registered"


def test_group_and_anycast_destinations_are_answered_from_the_home_agent(tmp_path):
    """To the Home-Agents anycast address (action 11) and to ff02::1 (action 10) the answer
    leaves from the home agent's own address, never from the group; action 11 to ff02::1 and
    a misplaced Hop-by-Hop header to ff02::1 get none."""
    net = Network(tmp_path)
    net.start()
    ha = net.has[0]
    sender = IPv6Address("2001:db8:9::9")
    group = IPv6Address("ff02::1")
    for dst, option, answered in ((ha.machine.anycast, 0xDE, True), (group, 0x9E, True),
                                  (group, 0xDE, False)):
        ha.adapter.error_budget.tokens = ha.adapter.error_budget.burst
        start = len(net.hub.log)
        ha.adapter.packet_received(_packet(sender, dst, option))
        answers = _answers(net, start)
        if answered:
            assert [(a[1], a[2]) for a in answers] == [(HAS[0], sender)]
        else:
            assert answers == []
    hbh = struct.pack("!IHBB", 6 << 28, 24, 60, 64) + sender.packed + group.packed + \
        bytes((0, 0, 1, 4, 0, 0, 0, 0)) + bytes((135, 0, 1, 4, 0, 0, 0, 0)) + MH
    start = len(net.hub.log)
    ha.adapter.packet_received(hbh)
    assert _answers(net, start) == []
    assert ha.adapter.counters["dropped.misplaced-hop-by-hop"] == 1
    assert ha.adapter.counters["parameter-problem-not-sent.multicast-destination"] == 2
