"""Tier 3: a checksum left to "hardware" on a veth is completed by the user-space tunnel.

Two namespaces on one veth link (transmit checksum offload on, the veth default). Node a plays
the home agent's kernel tunnel (ip6tnl on a stock kernel, which this kernel lacks): it hands its
veth an IPv6-in-IPv6 packet whose inner UDP checksum is left to hardware, through an
``AF_PACKET`` socket with ``PACKET_VNET_HDR`` (``VIRTIO_NET_HDR_F_NEEDS_CSUM``): the socket
buffer is ``CHECKSUM_PARTIAL``, as ip6tnl's would be. Node b is the mobile node: a
``RawTransport`` and a ``MobileTunnel`` decapsulate it into a TUN, and a UDP socket bound to
the home address must receive the datagram. Without the completion b's kernel drops it
(bad UDP checksum): the second case shows that the test would fail without the fix.
"""

import socket
import struct
from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from haha.backends.netsys import Pyroute2Netlink
from haha.backends.tun import MobileTunnel
from haha.io.offload import VNET_HDR, VIRTIO_NET_HDR_F_NEEDS_CSUM
from haha.io.raw import RawTransport
from haha.io.system import LinuxSystem, in_netns
from haha.lab.timing import scaled
from haha.lab.topology import Topology
from haha.wire.ipv6 import build_packet

A = IPv6Address("2001:db8:5::1")  # the home agent
B = IPv6Address("2001:db8:5::2")  # the mobile node's care-of address
CN = IPv6Address("2001:db8:30::5")
HOME = IPv6Address("2001:db8:1::100")
PORT = 5201
PACKET_VNET_HDR = 15


def _pseudo_sum(src, dst, length, proto):
    s = 0
    data = src.packed + dst.packed + struct.pack("!IxxxB", length, proto)
    for i in range(0, len(data), 2):
        s += int.from_bytes(data[i:i + 2], "big")
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _send_partial(topo, payload):
    """From node a: IPv6-in-IPv6 (A -> B) carrying UDP (CN -> HOME) whose checksum field holds
    only the pseudo-header sum, handed to a's veth as CHECKSUM_PARTIAL."""
    udp = struct.pack("!HHHH", 40000, PORT, 8 + len(payload),
                      _pseudo_sum(CN, HOME, 8 + len(payload), 17)) + payload
    packet = build_packet(A, B, 41, build_packet(CN, HOME, 17, udp))
    mac_b = bytes.fromhex(topo.run("b", ["cat", "/sys/class/net/eth0/address"]).stdout
                          .strip().replace(":", ""))
    with in_netns(topo.ns("a")):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.setsockopt(263, PACKET_VNET_HDR, 1)  # SOL_PACKET
        s.bind(("eth0", 0))
        mac_a = s.getsockname()[4]
        eth = mac_b + mac_a + b"\x86\xdd"
        # csum_start counts from the Ethernet header: 14 + 40 (outer) + 40 (inner).
        vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 14 + 80, 6)
        s.send(vnet + eth + packet)
    finally:
        s.close()


@pytest.mark.netns
@pytest.mark.parametrize("complete", [True, False], ids=["completed", "left-unfinished"])
@pytest_twisted.inlineCallbacks
def test_partial_checksum_through_user_space_tunnel(require_root, complete):
    """A tunnelled UDP datagram whose checksum a veth left to hardware reaches the socket on
    the mobile node's home address through AF_PACKET, the MobileTunnel and its TUN when the
    transport completes the checksum (counted as checksum_completed); with the completion
    turned off the node's kernel drops it although it was decapsulated and written."""
    topo = Topology()
    topo.add_node("a").add_node("b")
    topo.add_link("l", ("a", "eth0", [f"{A}/64"]), ("b", "eth0", [f"{B}/64"]))
    topo.create()
    parts = []
    try:
        ns = topo.ns("b")
        nl = Pyroute2Netlink(ns)
        parts.append(nl.close)
        tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(ns))
        tx.complete_checksums = complete
        tunnel = MobileTunnel(reactor, tx, tun_name="hahamn0", netlink=nl,
                              system=LinuxSystem(ns))
        tx.start(lambda p: tunnel.decapsulate(p) if p[6] == 41 else None)
        parts.append(tx.stop)
        tunnel.start()
        parts.append(tunnel.stop)
        tunnel.set_endpoint(HOME, B, A)
        with in_netns(ns):
            rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        parts.append(rx.close)
        rx.bind((str(HOME), PORT))
        rx.setblocking(False)

        _send_partial(topo, b"through the tunnel")
        got = []
        deadline = reactor.seconds() + scaled(3.0 if complete else 1.5)
        while not got and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.02, lambda: None)
            try:
                got.append(rx.recvfrom(2048))
            except BlockingIOError:
                pass
        assert tx.counters["checksum_partial"] == 1, dict(tx.counters)
        assert tunnel.counters["decapsulated"] == 1, dict(tunnel.counters)
        if complete:
            assert tx.counters["checksum_completed"] == 1
            assert got and got[0][0] == b"through the tunnel"
            assert IPv6Address(got[0][1][0]) == CN
        else:
            assert not got, "the unfinished checksum was accepted: the test proves nothing"
    finally:
        for stop in reversed(parts):
            try:
                stop()
            except Exception:  # clean up everything even when one part fails
                pass
        topo.destroy()
