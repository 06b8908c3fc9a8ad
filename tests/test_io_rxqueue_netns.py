"""Tier 3: the raw transport's input queue on a real kernel (two namespaces on one veth link):
peers first, supersession and kernel drops with real packet sockets and the real reactor."""

import struct
from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from reactor_wait import wait_for
from haha.io.raw import RawTransport
from haha.io.system import LinuxSystem
from haha.lab.topology import Topology
from haha.wire.ipv6 import build_packet

A = IPv6Address("2001:db8:5::1")
B = IPv6Address("2001:db8:5::2")
PEER_SPI = 0x5EE5
BASE = int(IPv6Address("2001:db8:20::"))


def _pair():
    t = Topology()
    t.add_node("a").add_node("b")
    t.add_link("l", ("a", "eth0", [f"{A}/64"]), ("b", "eth0", [f"{B}/64"]))
    return t.create()


def _esp(src, spi, seq, body=32):
    return build_packet(src, B, 50, struct.pack("!II", spi, seq) + bytes(body))


def _node(i):
    return IPv6Address(BASE + i + 1)


@defer.inlineCallbacks
def _rig(topo, **kw):
    """(sender on a, receiving transport on b, what b received)."""
    tx = RawTransport(reactor, interfaces=["eth0"], netfilter=False,
                      system=LinuxSystem(topo.ns("a")))
    tx.start(lambda p: None)
    got = []
    rx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(topo.ns("b")), **kw)
    rx.start(got.append)
    yield wait_for(lambda: True)
    return tx, rx, got


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_a_real_peer_packet_overtakes_the_node_packets_queued_before_it(require_root):
    """300 node packets, three retransmissions of one of them and then a peer's packet (ESP
    under the peer's SPI) are queued by the kernel before the reactor reads: the peer's packet
    is handed over first, the retransmissions are processed once (the last copy, counted as
    superseded), everything else in arrival order."""
    topo = _pair()
    tx = rx = None
    try:
        tx, rx, got = yield _rig(topo, peers={A: {PEER_SPI}}, receive_buffer=1 << 22)
        nodes = [_esp(_node(i), 0x100 + i, 1) for i in range(300)]
        again = [_esp(_node(7), 0x107, seq) for seq in (2, 3, 4)]
        hello = _esp(A, PEER_SPI, 1)
        for p in nodes + again + [hello]:  # no reactor turn in between
            tx.send(p)
        yield wait_for(lambda: len(got) >= 301, what="every packet")
        yield wait_for(lambda: True)
        assert got[0] == hello
        assert got[1:] == nodes[:7] + [again[-1]] + nodes[8:]
        assert rx.counters["superseded"] == 3 and rx.counters["received_from_peers"] == 1
    finally:
        for t in (tx, rx):
            if t is not None:
                t.stop()
        topo.destroy()


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_kernel_drops_on_a_packet_socket_are_counted(require_root):
    """A packet socket with a small receive buffer: what the sender sends faster than the
    reactor reads is dropped by the kernel, and the next packet read brings the number
    (SO_RXQ_OVFL): ``kernel_drops`` is exactly what was sent and never received."""
    topo = _pair()
    tx = rx = None
    try:
        tx, rx, got = yield _rig(topo, receive_buffer=4096)
        for i in range(300):
            tx.send(_esp(_node(i), 0x100 + i, 1, body=400))
        yield wait_for(lambda: got, what="the first packets")
        yield _sleep(0.2)
        first = len(got)
        assert first < 300
        tx.send(_esp(_node(999), 0x999, 1))
        yield wait_for(lambda: len(got) > first, what="the last packet")
        assert rx.counters["kernel_drops"] == 301 - len(got)
    finally:
        for t in (tx, rx):
            if t is not None:
                t.stop()
        topo.destroy()


def _sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
