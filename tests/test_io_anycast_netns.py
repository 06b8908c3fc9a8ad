"""Tier 3: the Home-Agents anycast address joined by RawTransport on a real kernel.

Two namespaces on one link of the home prefix 2001:db8:1::/64: ``ha`` (a home agent: forwarding
on, 2001:db8:1::1) whose raw transport joins 2001:db8:1::fdff:ffff:ffff:fffe (RFC 2526, RFC 6275
10.5) on its interface, and ``r`` (the home link's router, 2001:db8:1::ff) that sends a DHAAD
request to it. What is observed: the kernel lists the membership in /proc/net/anycast6; it
answers r's Neighbour Solicitation with a solicited Neighbour Advertisement without the Override
flag (RFC 4861 7.2.7, anycast); the request reaches the transport's receiver byte for byte; the
kernel answers the request with nothing (no ICMPv6 error: checked with an echo barrier, as in
``test_io_raw_netns.py``); and after the transport stops the membership is gone and r's
solicitations go unanswered.
"""

import struct
from ipaddress import IPv6Address, IPv6Network

import pytest
import pytest_twisted
from twisted.internet import reactor

from reactor_wait import wait_for
from haha.core.homeagent import home_agents_anycast
from haha.io.raw import RawTransport
from haha.io.system import LinuxSystem
from haha.lab.topology import Topology
from haha.wire import checksum
from haha.wire.icmpv6 import DhaadRequest, encode_icmpv6
from haha.wire.ipv6 import build_packet

HA = IPv6Address("2001:db8:1::1")
R = IPv6Address("2001:db8:1::ff")
ANYCAST = home_agents_anycast(IPv6Network("2001:db8:1::/64"))
NA, ECHO_REPLY = 136, 129
NA_OVERRIDE, NA_SOLICITED = 0x20, 0x40


def _wait(predicate, what="condition"):
    return wait_for(predicate, 10.0, what)


def _pair():
    t = Topology()
    t.add_node("ha", forwarding=True).add_node("r", forwarding=True)
    t.add_link("home", ("ha", "eth0", [f"{HA}/64"]), ("r", "eth0", [f"{R}/64"]))
    return t.create()


def _request(identifier):
    return build_packet(R, ANYCAST, 58, encode_icmpv6(DhaadRequest(identifier), R, ANYCAST))


def _echo(ident):
    body = struct.pack("!BBHHH", 128, 0, 0, ident, 1) + b"barrier"
    c = checksum.checksum(R.packed, HA.packed, 58, body)
    return build_packet(R, HA, 58, body[:2] + c.to_bytes(2, "big") + body[4:])


def _memberships(topo):
    out = set()
    for line in topo.run("ha", ["cat", "/proc/net/anycast6"]).stdout.splitlines():
        _, interface, hexaddr, _ = line.split()
        out.add((IPv6Address(bytes.fromhex(hexaddr)), interface))
    return out


def _neighbour(topo):
    return topo.run("r", ["ip", "-6", "neigh", "show", str(ANYCAST), "dev", "eth0"]).stdout


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_joined_anycast_answers_ns_and_receives_dhaad(require_root):
    """While the transport runs, the kernel answers NS for the anycast address (solicited, no
    Override) and the DHAAD request reaches the receiver unanswered by the kernel; after stop
    the membership is gone and an NS for the address goes unanswered."""
    topo = _pair()
    ha_tx = r_tx = None
    try:
        got = []
        ha_tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(topo.ns("ha")))
        ha_tx.start(got.append)
        ha_tx.join_anycast(ANYCAST, "eth0")
        assert (ANYCAST, "eth0") in _memberships(topo)

        seen = []  # r's side: Neighbour Advertisements, ICMPv6 errors, echo replies
        r_tx = RawTransport(reactor, interfaces=["eth0"], icmp_types={1, 2, 3, 4, NA,
                                                                      ECHO_REPLY},
                            netfilter=False, system=LinuxSystem(topo.ns("r")))
        r_tx.start(seen.append)
        request = _request(0x4242)
        r_tx.send(request)
        yield _wait(lambda: request in got, what="the DHAAD request at the home agent")
        assert got == [request]

        nas = [p for p in seen if p[6] == 58 and p[40] == NA and p[48:64] == ANYCAST.packed]
        assert nas, [p[40] for p in seen]
        flags = nas[0][44]
        assert flags & NA_SOLICITED and not flags & NA_OVERRIDE, hex(flags)
        assert "lladdr" in _neighbour(topo)

        seen.clear()
        r_tx.send(_request(0x4343))
        r_tx.send(_echo(7))
        yield _wait(lambda: any(p[40] == ECHO_REPLY for p in seen), what="echo reply")
        before = [p[40] for p in seen][: [p[40] for p in seen].index(ECHO_REPLY)]
        assert not set(before) & {1, 2, 3, 4}, before

        ha_tx.stop()
        ha_tx = None
        assert (ANYCAST, "eth0") not in _memberships(topo)
        topo.run("r", ["ip", "-6", "neigh", "flush", "dev", "eth0"])
        seen.clear()
        r_tx.send(_request(0x4444))
        yield _wait(lambda: "FAILED" in _neighbour(topo), what="r giving up on the address")
        assert not [p for p in seen if p[40] == NA and p[48:64] == ANYCAST.packed]
    finally:
        for tx in (ha_tx, r_tx):
            if tx is not None:
                tx.stop()
        topo.destroy()
