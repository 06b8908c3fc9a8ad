"""Partial checksums left to the kernel (docs/io.md "Partial checksums left to the kernel"),
against the fakes: the TUN's hook for partial reads, the home agent writing them back as
tunnel packets with a NEEDS_CSUM header at the inner checksum, a tunnel end writing a
partial inner packet behind NEEDS_CSUM, and the raw transport handing partial tunnel
packets over uncompleted. Checksums are checked with scapy as the oracle, after doing what
the kernel does with NEEDS_CSUM."""

import struct
from collections import Counter
from ipaddress import IPv6Address

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.packet import Raw
from twisted.internet.testing import MemoryReactor

from haha.backends.netsys import FakeNetlink
from haha.backends.tun import MobileTunnel, TunBackend
from haha.core.duties import ForwardingRoute
from haha.io.offload import (TP_STATUS_CSUMNOTREADY, VNET_HDR, VNET_NONE, ones_sum,
                             partial_header)
from haha.io.raw import RawTransport
from haha.io.system import FakeSystem
from haha.io.tun import TunDevice

HA = IPv6Address("2001:db8:1::1")
HOME = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:20::5")
CN = IPv6Address("2001:db8:30::10")
MAC = b"\x02\xaa\xbb\xcc\xdd\xee"
LL = IPv6Address("fe80::1")


def _partial(packet: bytes, start: int, offset: int) -> bytes:
    """``packet`` (finished by scapy) with its checksum at ``start + offset`` replaced by
    what a sender with checksum offload leaves there: the folded pseudo-header sum, i.e.
    the sum that, added to the transport segment's own sum, gives the finished checksum's
    complement."""
    out = bytearray(packet)
    out[start + offset:start + offset + 2] = b"\0\0"
    # finished = ~(pseudo + segment)  =>  pseudo = ~finished - segment
    finished = struct.unpack_from("!H", packet, start + offset)[0]
    segment = ones_sum(bytes(out[start:]))
    pseudo = ((0xFFFF - finished) - segment) % 0xFFFF
    struct.pack_into("!H", out, start + offset, pseudo)
    return bytes(out)


def _kernel_completes(packet: bytes, vnet: bytes) -> bytes:
    """What the kernel (or a network card) does with a NEEDS_CSUM packet."""
    flags, gso, _, _, start, offset = VNET_HDR.unpack(vnet)
    assert flags == 1 and gso == 0
    out = bytearray(packet)
    total = 0
    for i in range(start, len(out) - 1, 2):
        total += out[i] << 8 | out[i + 1]
    if (len(out) - start) % 2:
        total += out[-1] << 8
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", out, start + offset, 0xFFFF - total)
    return bytes(out)


def _udp(src=CN, dst=HOME, payload=b"x" * 1400, ext=False) -> bytes:
    layers = IPv6(src=str(src), dst=str(dst), hlim=63)
    if ext:
        layers = layers / IPv6ExtHdrDestOpt()
    return bytes(layers / UDP(sport=5000, dport=6000) / Raw(payload))


def _scapy_ok(packet: bytes) -> bool:
    """scapy recomputes the innermost UDP/TCP checksum and finds the one in the packet."""
    p = IPv6(packet)
    layer = p[UDP] if UDP in p else p[TCP]
    given = layer.chksum
    del layer.chksum
    return IPv6(bytes(p))[type(layer)].chksum == given


def test_partial_header_points_at_the_checksum():
    """partial_header gives NEEDS_CSUM from the UDP or TCP header (found through extension
    headers) with the checksum's offset; None for a packet without either, or with octets
    after the packet's end."""
    plain = _udp()
    assert VNET_HDR.unpack(partial_header(plain)) == (1, 0, 0, 0, 40, 6)
    behind = _udp(ext=True)
    assert VNET_HDR.unpack(partial_header(behind)) == (1, 0, 0, 0, 48, 6)
    tcp = bytes(IPv6(src=str(CN), dst=str(HOME)) / TCP() / Raw(b"y" * 10))
    assert VNET_HDR.unpack(partial_header(memoryview(tcp))) == (1, 0, 0, 0, 40, 16)
    assert partial_header(bytes(IPv6(src=str(CN), dst=str(HOME), nh=59))) is None
    assert partial_header(plain + b"pad") is None
    # what the kernel then completes is the right checksum
    partial = _partial(plain, 40, 6)
    assert not _scapy_ok(partial)
    assert _kernel_completes(partial, partial_header(partial)) == plain


def test_tun_hands_partial_reads_to_their_hook_or_completes_them():
    """With offloads, a non-GSO read with NEEDS_CSUM goes to partial_receiver first: taken as
    it is (partial_whole, nothing delivered), or completed and delivered as before when the
    hook says no; reads without NEEDS_CSUM never reach the hook."""
    tun = TunDevice(MemoryReactor(), "hahat%d", system=FakeSystem())
    got, hooked = [], []
    tun.start(got.append, offload=True)
    tun.partial_receiver = lambda frame: hooked.append(frame) or True
    good = _udp()
    partial = _partial(good, 40, 6)
    vnet = VNET_HDR.pack(1, 0, 0, 0, 40, 6)
    tun.file.inject(partial, vnet)
    tun.file.inject(good)  # finished: no NEEDS_CSUM
    tun.doRead()
    assert hooked == [vnet + partial] and got == [good]
    assert tun.counters["partial_whole"] == 1
    tun.partial_receiver = lambda frame: False
    tun.file.inject(partial, vnet)
    tun.doRead()
    assert got == [good, good] and tun.counters["partial_whole"] == 1


def _backend(cls=TunBackend, **kw):
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, HA]}}, system=system)

    class _Transport:
        def __init__(self):
            self.sent, self.counters, self.fragments, self.mark = [], Counter(), [], None
            self.partial = []
            self.reads_every_interface = False

        def send(self, packet, interface=None):
            self.sent.append(packet)

        def pass_tunnel_fragments(self, enabled=True):
            self.fragments.append(enabled)

        def set_partial_tunnel_receiver(self, receiver):
            self.partial.append(receiver)

    tx = _Transport()
    b = cls(MemoryReactor(), tx, netlink=nl, system=system, super_packets=True, **kw)
    b.kernel_sum = None
    b.tunnel_socket.__init__(MemoryReactor(), b.hop_limit, opener=lambda: _Sock())
    b.start()
    return b, tx


class _Sock:
    def setsockopt(self, *a):
        pass

    def fileno(self):
        return 99

    def close(self):
        pass


def test_home_agent_writes_partial_reads_back_as_tunnel_packets():
    """At the home agent, a partial read to a home address is written back to the TUN as a
    tunnel packet (outer source the route's local address, destination the care-of address,
    Hop Limit one above the tunnel's, for the forwarding that takes one off) behind
    NEEDS_CSUM at the inner checksum: nothing summed, nothing sent through the transport,
    and what the kernel completes is scapy's checksum. Without a route it is counted and
    dropped; with a tunnel Hop Limit of 255, a transport reading every interface (it would
    read them back) or forwarding left to the administrator, it is completed and sent the
    usual way."""
    b, tx = _backend()
    b.install(ForwardingRoute(HOME, COA, HA, (), True))
    good = _udp(ext=True)
    partial = _partial(good, 48, 6)
    b.tun.file.inject(partial, VNET_HDR.pack(1, 0, 0, 0, 48, 6))
    b.tun.doRead()
    assert tx.sent == [] and b.counters["encap_partial"] == 1
    (vnet,), (written,) = b.tun.file.written_vnet[-1:], b.tun.file.written[-1:]
    assert VNET_HDR.unpack(vnet) == (1, 0, 0, 0, 40 + 48, 6)
    outer = IPv6(written)
    assert (outer.src, outer.dst, outer.nh, outer.hlim, outer.plen) == (
        str(HA), str(COA), 41, 65, len(good))
    assert outer.tc == 0 and outer.fl == 0
    assert written[40:] == partial
    assert _kernel_completes(written, vnet)[40:] == good
    # no route: counted, dropped
    b.tun.file.inject(_partial(_udp(dst=CN), 40, 6), VNET_HDR.pack(1, 0, 0, 0, 40, 6))
    b.tun.doRead()
    assert b.counters["tun_no_route"] == 1 and len(b.tun.file.written) == 1
    b.stop()
    assert tx.partial[-1] is None and b.tun.partial_receiver is None

    # a transport that reads every interface would read the written-back packets too
    every, tx = _backend()
    assert every.tun.partial_receiver is not None
    every.stop()
    tx.reads_every_interface = True
    every.start()
    assert every.tun.partial_receiver is None and tx.partial[-1] == every._decapsulate_partial
    every.stop()

    hl, tx = _backend(hop_limit=255)
    hl.install(ForwardingRoute(HOME, COA, HA, (), True))
    hl.tun.file.inject(partial, VNET_HDR.pack(1, 0, 0, 0, 48, 6))
    hl.tun.doRead()
    assert not hl.counters["encap_partial"] and len(tx.sent) == 1
    assert tx.sent[0][40:] == good and tx.sent[0][7] == 255

    # forwarding = no: the kernel might not forward it; summed and sent the usual way
    nf, tx = _backend(enable_forwarding=False)
    nf.install(ForwardingRoute(HOME, COA, HA, (), True))
    nf.tun.file.inject(partial, VNET_HDR.pack(1, 0, 0, 0, 48, 6))
    nf.tun.doRead()
    assert not nf.counters["encap_partial"] and len(tx.sent) == 1 and tx.sent[0][40:] == good


def test_tunnel_ends_write_partial_inner_packets_for_the_kernel():
    """A tunnel packet whose inner checksum is partial (the raw transport's partial
    receiver) passes the same checks as decapsulate and is written behind NEEDS_CSUM at the
    inner checksum (decap_partial), at the node and at the home agent; a spoofed one is
    counted and not written; one without TCP/UDP is written as it is (counted); one whose
    checksum does not reach its end (nested, octets after it) is completed here first."""
    t, tx = _backend(MobileTunnel)
    assert tx.partial[-1] == t._decapsulate_partial
    t.set_endpoint(HOME, COA, HA)
    good = _udp()
    partial = _partial(good, 40, 6)
    tunnelled = bytes(IPv6(src=str(HA), dst=str(COA), hlim=64) / Raw(partial))
    tunnelled = tunnelled[:6] + b"\x29" + tunnelled[7:]
    assert t._decapsulate_partial(tunnelled)
    vnet, written = t.tun.file.written_vnet[-1], t.tun.file.written[-1]
    assert VNET_HDR.unpack(vnet) == (1, 0, 0, 0, 40, 6) and written == partial
    assert _kernel_completes(written, vnet) == good and _scapy_ok(good)
    assert t.counters["decap_partial"] == 1
    spoofed = bytes(IPv6(src=str(CN), dst=str(COA), nh=41) / Raw(partial))
    assert not t._decapsulate_partial(spoofed)
    assert t.counters["decap_unknown_peer"] == 1 and len(t.tun.file.written) == 1
    icmp = bytes(IPv6(src=str(CN), dst=str(HOME), nh=59))
    assert t._decapsulate_partial(bytes(IPv6(src=str(HA), dst=str(COA), nh=41) / Raw(icmp)))
    assert t.tun.file.written_vnet[-1] == VNET_NONE
    assert t.counters["decap_partial_unfinished"] == 1
    # a UDP packet inside a further IPv6 header (the sum cannot be left to the kernel, which
    # would sum to the end of the whole packet): completed here, then written
    middle = bytes(IPv6(src=str(CN), dst=str(HOME), nh=41, plen=len(good) + 2))
    nested = middle + partial + b"\0\0"  # octets after the innermost packet's end
    assert partial_header(nested) is None
    assert t._decapsulate_partial(bytes(IPv6(src=str(HA), dst=str(COA), nh=41) /
                                        Raw(nested)))
    assert t.tun.file.written[-1] == middle + good + b"\0\0"
    assert t.tun.file.written_vnet[-1] == VNET_NONE
    assert t.counters["decap_partial_completed"] == 1
    # afterwards decapsulate writes finished packets the usual way again
    assert t.decapsulate(bytes(IPv6(src=str(HA), dst=str(COA), nh=41) / Raw(good)))
    assert t.tun.file.written_vnet[-1] == VNET_NONE and t.tun.file.written[-1] == good

    b, _ = _backend()
    b.install(ForwardingRoute(HOME, COA, HA, (), True))
    up = _partial(_udp(src=HOME, dst=CN), 40, 6)
    assert b._decapsulate_partial(bytes(IPv6(src=str(COA), dst=str(HA), nh=41) / Raw(up)))
    assert VNET_HDR.unpack(b.tun.file.written_vnet[-1]) == (1, 0, 0, 0, 40, 6)
    assert b.counters["decap_partial"] == 1


def test_raw_transport_hands_partial_tunnel_packets_over_uncompleted():
    """With a partial tunnel receiver, a tunnelled packet flagged TP_STATUS_CSUMNOTREADY
    reaches it as it came (checksum_left_partial); a flagged packet that is not tunnelled is
    still completed for the daemon; without one, the tunnel receiver gets it completed."""
    system = FakeSystem({"lo": 1, "eth0": 2})
    reactor = MemoryReactor()
    t = RawTransport(reactor, system=system, table="haha_test_1")
    got, tunnel, partial_got = [], [], []
    t.start(got.append)
    t.set_tunnel_receiver(tunnel.append)
    t.set_partial_tunnel_receiver(partial_got.append)
    good = _udp(src=CN, dst=HOME, payload=b"hello")
    partial = _partial(good, 40, 6)
    tunnelled = bytes(IPv6(src=str(COA), dst=str(HA), nh=41) / Raw(partial))
    sock = system.packet_sockets[0]
    sock.inject(tunnelled, status=TP_STATUS_CSUMNOTREADY)
    next(iter(reactor.readers)).doRead()
    assert partial_got == [tunnelled] and tunnel == []
    assert t.counters["checksum_left_partial"] == 1 and not t.counters["checksum_completed"]
    t.set_partial_tunnel_receiver(None)
    sock.inject(tunnelled, status=TP_STATUS_CSUMNOTREADY)
    next(iter(reactor.readers)).doRead()
    assert len(tunnel) == 1 and tunnel[0][40:] == good
    assert t.counters["checksum_completed"] == 1


def _kinds():
    """Every kind of packet a TUN hands over with a partial checksum, finished by scapy, and
    where its checksum is (start, offset)."""
    tcp = bytes(IPv6(src=str(CN), dst=str(HOME), hlim=63) /
                TCP(sport=80, dport=40000, flags="A", seq=7, ack=9) / Raw(b"z" * 333))
    ack = bytes(IPv6(src=str(CN), dst=str(HOME), hlim=63) / TCP(sport=80, dport=40000,
                                                                   flags="A"))
    return {
        "udp-1400": (_udp(), 40, 6),
        "udp-odd": (_udp(payload=b"q" * 1001), 40, 6),
        "udp-empty": (_udp(payload=b""), 40, 6),
        "udp-behind-destination-options": (_udp(ext=True), 48, 6),
        "tcp-segment": (tcp, 40, 16),
        "tcp-ack": (ack, 40, 16),
    }


def test_every_kind_of_partial_packet_is_finished_right_at_both_ends():
    """For UDP (even, odd and empty payloads, behind a Destination Options header) and TCP
    (a segment, a bare ACK) with partial checksums: the tunnel packet the home agent writes
    back and the inner packet the node writes, once the kernel has done what NEEDS_CSUM asks,
    carry scapy's checksum."""
    b, _ = _backend()
    b.install(ForwardingRoute(HOME, COA, HA, (), True))
    t, _ = _backend(MobileTunnel)
    t.set_endpoint(HOME, COA, HA)
    for name, (good, start, offset) in _kinds().items():
        assert _scapy_ok(good), name
        partial = _partial(good, start, offset)
        b.tun.file.inject(partial, VNET_HDR.pack(1, 0, 0, 0, start, offset))
        b.tun.doRead()
        vnet, written = b.tun.file.written_vnet[-1], b.tun.file.written[-1]
        assert written[40:] == partial, name
        assert _kernel_completes(written, vnet)[40:] == good, name
        # the node, as the written-back tunnel packet reaches it through a veth: partial
        assert t._decapsulate_partial(written[:7] + bytes([64]) + written[8:]), name
        vnet, inner = t.tun.file.written_vnet[-1], t.tun.file.written[-1]
        assert inner == partial and _kernel_completes(inner, vnet) == good, name
    assert b.counters["encap_partial"] == len(_kinds()) == t.counters["decap_partial"]
