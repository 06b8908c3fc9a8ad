"""Super-packets (haha.io.superpkt and its use by the tun backend), against fakes: the TCP
checksum completed once over a super-packet, the virtio_net_hdr that hands a reassembled one
to a TUN as GSO, the protocol-41 socket's options, sends and receives, the TUN's hook for
GSO reads, the guard's fragment rule, the backend's choice of what goes whole (host routes
only) and its checks on what comes back (no open relay), and the configuration key. scapy
is the independent oracle for checksums."""

import errno
import os
import socket
import struct
from collections import Counter
from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor

from haha.backends.netsys import FakeNetlink
from haha.backends.tun import MobileTunnel, TunBackend, options_of
from haha.core.duties import ForwardingRoute
from haha.inifile import ConfigError, parse_ini
from haha.io.offload import VNET_HDR, ones_sum
from haha.io.raw import RawTransport
from haha.io.superpkt import (KERNEL_SUM_PROTOCOL, KernelSum, TunnelSocket,
                              complete_tcp_checksum, gso_header, pseudo_sum,
                              python_segment_sum, tcp_checksum_ok)
from haha.io.system import FakeSystem
from haha.io.tun import TunDevice

HA = IPv6Address("2001:db8:1::1")
HOME = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:20::5")
CN = IPv6Address("2001:db8:30::10")
MNP = IPv6Network("2001:db8:99::/48")
MAC = b"\x02\xaa\xbb\xcc\xdd\xee"
LL = IPv6Address("fe80::1")


def _word_sum(data):
    """One's complement sum of 16-bit words, word by word (independent of haha)."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _tcp(src, dst, payload, options=()):
    """A TCP packet built and checksummed by scapy."""
    return bytes(IPv6(src=str(src), dst=str(dst), hlim=63) /
                 TCP(sport=5201, dport=40000, seq=1000, flags="PA", options=list(options)) /
                 Raw(payload))


def _gso_frame(packet, gso_size=1388, partial=True):
    """What a TUN with offloads hands over for a TCP super-packet: a virtio_net_hdr asking for
    GSO TCPv6 and the checksum, the field holding only the pseudo-header sum."""
    packet = bytearray(packet)
    if partial:
        packet[56:58] = pseudo_sum(bytes(packet))
    hdr_len = 40 + (packet[52] >> 4) * 4
    return VNET_HDR.pack(1, 4, hdr_len, gso_size, 40, 16) + bytes(packet)


# -- checksums and the GSO header ---------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=65000), st.binary(min_size=0, max_size=16))
def test_complete_tcp_checksum_matches_scapy(size, junk):
    """Whatever the checksum field holds (a partial sum or rubbish), the completed field is
    scapy's checksum of the segment, for even and odd lengths up to a 64 KB super-packet."""
    payload = (bytes(range(256)) * 256)[:size]
    good = _tcp(CN, HOME, payload)
    bad = bytearray(good)
    bad[56:58] = (junk + b"\x12\x34")[:2]
    field = complete_tcp_checksum(memoryview(bytes(bad)))
    assert field == good[56:58]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=20000))
def test_ones_sum_in_pieces_is_the_word_by_word_sum(data):
    """ones_sum of any string (long ones summed in pieces, odd lengths padded) equals
    the word-by-word one's complement sum, modulo 0xFFFF."""
    assert ones_sum(data) == _word_sum(data) % 0xFFFF
    assert ones_sum(memoryview(data)) == _word_sum(data) % 0xFFFF


def test_ones_sum_at_the_piece_boundaries():
    """Lengths around the piece size and a whole super-packet, odd and even."""
    for n in (511, 512, 513, 4095, 4096, 4097, 8191, 8193, 65535, 65536):
        data = os.urandom(n)
        assert ones_sum(data) == _word_sum(data) % 0xFFFF, n


def test_tcp_checksum_ok_accepts_scapy_and_refuses_a_flipped_bit():
    """tcp_checksum_ok is true for scapy's packets, odd and even, and false once one bit of
    the payload or of an address (the pseudo-header) is flipped."""
    for size in (0, 1, 1399, 30000, 30001):
        good = _tcp(CN, HOME, os.urandom(size))
        assert tcp_checksum_ok(good)
        for at in (len(good) - 1, 20):
            bad = bytearray(good)
            bad[at] ^= 0x04
            assert not tcp_checksum_ok(bytes(bad)), (size, at)


def test_pseudo_sum_is_what_the_kernel_expects_for_needs_csum():
    """pseudo_sum is the folded pseudo-header sum (addresses, TCP length, next header 6):
    adding the segment's own sum to it and complementing gives scapy's checksum."""
    packet = bytearray(_tcp(CN, HOME, bytes(3001)))
    want = packet[56:58]
    field = pseudo_sum(bytes(packet))
    packet[56:58] = b"\0\0"
    total = int.from_bytes(field, "big") + _word_sum(packet[40:])
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    assert (0xFFFF - total).to_bytes(2, "big") == want


def test_gso_header_for_a_large_tcp_segment_only():
    """A TCP segment longer than the tunnel MTU gets GSO TCPv6 with NEEDS_CSUM over the TCP
    header (csum_start 40, offset 16), hdr_len the headers and gso_size the rest of the MTU;
    a segment that fits, UDP, an extension header or a wrong Payload Length get none."""
    big = _tcp(CN, HOME, bytes(20000), options=[("Timestamp", (1, 2))])
    flags, gso, hdr_len, gso_size, start, offset = VNET_HDR.unpack(gso_header(big, 1460))
    assert (flags, gso, start, offset) == (1, 4, 40, 16)
    assert hdr_len == 40 + 32 and gso_size == 1460 - hdr_len
    assert gso_header(_tcp(CN, HOME, bytes(1000)), 1460) is None
    udp = bytes(IPv6(src=str(CN), dst=str(HOME)) / UDP() / Raw(bytes(20000)))
    assert gso_header(udp, 1460) is None
    cut = bytearray(big)
    cut[4:6] = (len(big) - 41).to_bytes(2, "big")
    assert gso_header(bytes(cut), 1460) is None


# -- sums in the kernel ---------------------------------------------------------------------

class _Loopback:
    """The two loopback sockets of KernelSum, doing in Python what the kernel does
    (IPV6_CHECKSUM at 16: complement of pseudo-header (::1, ::1, length, 253) plus the
    payload with the field taken as zero), or misbehaving as told."""

    def __init__(self):
        self.queue = []
        self.mode = "kernel"
        self.closed = 0

    def sendto(self, data, address):
        data = bytearray(data)
        if self.mode == "error":
            raise OSError(errno.EPERM, "dropped")
        data[16:18] = b"\0\0"
        total = 2 + len(data) + KERNEL_SUM_PROTOCOL + _word_sum(data)
        while total > 0xFFFF:
            total = (total & 0xFFFF) + (total >> 16)
        data[16:18] = (0xFFFF - total).to_bytes(2, "big")
        if self.mode == "other":
            data[0] ^= 1
        if self.mode != "late":
            self.queue.append(bytes(data))

    def recv(self, n):
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "nothing")
        return self.queue.pop(0)[:n]

    def close(self):
        self.closed += 1


def test_kernel_sum_gives_the_segments_own_sum_and_falls_back_when_it_cannot():
    """With the kernel's answer the segment's sum (field taken as zero) comes out as Python
    computes it, for even and odd lengths; an error, an answer not there yet or another
    packet read back gives None (the caller sums in Python), counted; after MAX_FAILURES in a
    row it is not asked again; stop closes both sockets."""
    lo = _Loopback()
    ks = KernelSum(opener=lambda: (lo, lo))
    assert ks(bytes(100)) is None  # not started
    ks.start()
    for n in (32, 33, 1400, 65001):
        segment = os.urandom(n)
        assert ks(segment) == python_segment_sum(segment), n
    assert ks.counters["sums"] == 4
    segment = os.urandom(2000)
    good = _tcp(CN, HOME, segment)
    assert complete_tcp_checksum(good, summer=ks) == good[56:58]
    assert tcp_checksum_ok(good, summer=ks)
    for mode, counter in (("error", "error.EPERM"), ("late", "error.EAGAIN"),
                          ("other", "mismatch")):
        lo.mode = mode
        assert ks(segment) is None and ks.counters[counter] == 1, mode
    assert complete_tcp_checksum(good, summer=ks) == good[56:58]  # in Python
    lo.mode = "kernel"
    assert ks(segment) == python_segment_sum(segment)
    lo.mode = "error"
    for _ in range(KernelSum.MAX_FAILURES):
        ks(segment)
    lo.mode = "kernel"
    assert ks(segment) is None and not lo.queue  # no longer asked
    ks.stop()
    assert lo.closed == 2 and not ks.running


def test_kernel_sum_without_loopback_sockets_sums_nothing():
    """When the sockets cannot be opened, start logs it and every sum is left to Python."""
    def refuse():
        raise OSError(errno.EPERM, "not allowed")
    ks = KernelSum(opener=refuse)
    ks.start()
    assert not ks.running and ks.counters["unavailable"] == 1 and ks(bytes(64)) is None


# -- the protocol-41 socket -----------------------------------------------------------------

class _Sock:
    """A protocol-41 raw socket in memory."""

    def __init__(self):
        self.options = {}
        self.sent = []
        self.queue = []
        self.closed = False
        self.fail_with = None

    def setsockopt(self, level, name, value):
        self.options[(level, name)] = value

    def sendmsg(self, buffers, ancillary, flags, address):
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        self.sent.append((b"".join(bytes(b) for b in buffers), ancillary, address))
        return 0

    def recvmsg(self, n, ancbufsize):
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "nothing")
        return self.queue.pop(0)

    def fileno(self):
        return -1

    def close(self):
        self.closed = True


def _pktinfo(address):
    return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, address.packed + bytes(4))]


def test_tunnel_socket_options_send_and_receive():
    """start sets the outer Hop Limit, Traffic Class 0, no automatic Flow Label, PKTINFO on
    receive and the mark; send gives the source in IPV6_PKTINFO; a received packet reaches
    the receiver with its outer source and destination; one without PKTINFO, a failing
    receiver and a failing send are counted, never raised; stop closes."""
    sock = _Sock()
    reactor = MemoryReactor()
    ts = TunnelSocket(reactor, 64, mark=7, opener=lambda: sock)
    got = []
    ts.start(lambda s, d, p: got.append((s, d, p)))
    v6 = socket.IPPROTO_IPV6
    assert sock.options[(v6, socket.IPV6_UNICAST_HOPS)] == 64
    assert sock.options[(v6, 67)] == 0 and sock.options[(v6, 70)] == 0
    assert sock.options[(v6, socket.IPV6_RECVPKTINFO)] == 1
    assert sock.options[(socket.SOL_SOCKET, 36)] == 7 and ts in reactor.readers
    assert ts.send(HA.packed, COA.packed, (b"abc", memoryview(b"def")))
    data, anc, address = sock.sent[0]
    assert data == b"abcdef" and address == (str(COA), 0, 0, 0)
    assert anc == [(v6, socket.IPV6_PKTINFO, HA.packed + bytes(4))]
    sock.queue.append((b"inner", _pktinfo(HA), 0, (str(COA), 0, 0, 0)))
    sock.queue.append((b"lost", [], 0, (str(COA), 0, 0, 0)))
    ts.doRead()
    assert got == [(COA.packed, HA.packed, b"inner")]
    assert ts.counters["received_no_pktinfo"] == 1
    ts._receiver = lambda s, d, p: 1 / 0
    sock.queue.append((b"x", _pktinfo(HA), 0, (str(COA), 0, 0, 0)))
    ts.doRead()
    assert ts.counters["receiver_errors"] == 1
    sock.fail_with = errno.EMSGSIZE
    assert ts.send(HA.packed, COA.packed, (b"x",)) is False
    assert ts.counters["send_error.EMSGSIZE"] == 1
    ts.stop()
    assert sock.closed and ts not in reactor.readers and not ts.running
    assert ts.send(HA.packed, COA.packed, (b"x",)) is False
    with pytest.raises(ValueError):
        TunnelSocket(reactor, 0)


# -- the TUN's hook ------------------------------------------------------------------------

def test_tun_hands_gso_reads_to_the_hook_before_cutting_them():
    """With offloads, a GSO read goes to gso_receiver first: taken whole (gso_whole), or
    cut into segments as before when it says no or fails (counted); write_offloaded puts the
    given virtio_net_hdr in front, and is refused without offloads."""
    system = FakeSystem()
    tun = TunDevice(MemoryReactor(), "hahat%d", system=system)
    got, whole = [], []
    tun.start(got.append, offload=True)
    frame = _gso_frame(_tcp(CN, HOME, bytes(5000)))
    tun.gso_receiver = lambda f: whole.append(f) or True
    tun.file.queue.append(frame)
    tun.doRead()
    assert whole == [frame] and got == [] and tun.counters["gso_whole"] == 1
    tun.gso_receiver = lambda f: False
    tun.file.queue.append(frame)
    tun.doRead()
    assert len(got) == 4 and tun.counters["gso_segments"] == 4
    tun.gso_receiver = lambda f: 1 / 0
    tun.file.queue.append(frame)
    tun.doRead()
    assert tun.counters["receiver_errors"] == 1 and len(got) == 4
    vnet = VNET_HDR.pack(1, 4, 60, 1400, 40, 16)
    assert tun.write_offloaded(vnet, (b"\x60" + bytes(59), b"tail"))
    assert tun.file.written_vnet[-1] == vnet and tun.file.written[-1].endswith(b"tail")
    plain = TunDevice(MemoryReactor(), "hahap%d", system=system)
    plain.start(got.append)
    assert plain.write_offloaded(vnet, (b"x",)) is False
    assert plain.counters["write_not_offloaded"] == 1


# -- the guard --------------------------------------------------------------------------------

def test_guard_lets_tunnel_fragments_through_only_when_asked():
    """pass_tunnel_fragments puts an accept rule for fragments of IPv6-in-IPv6 in front of
    the rule that drops protocol 41, and an output rule dropping ICMPv6 Port Unreachable
    about IPv6-in-IPv6, and takes both away again; without the guard it refuses (every
    tunnel packet would reach both sockets)."""
    system = FakeSystem()
    tx = RawTransport(MemoryReactor(), interfaces=["eth0"], system=system)
    tx.start(lambda p: None)
    assert "frag" not in tx._ruleset()
    tx.pass_tunnel_fragments(True)
    rules = tx._ruleset().splitlines()
    accept = [i for i, r in enumerate(rules) if "exthdr frag exists" in r]
    drop = [i for i, r in enumerate(rules) if "meta l4proto { 41" in r]
    assert accept and drop and accept[0] < drop[0] and "accept" in rules[accept[0]]
    assert "exthdr frag exists" in system.nft_scripts[-1]
    # and the Port Unreachable a kernel tunnel handler sends for a reassembled one is dropped
    output = [r for r in rules if "port-unreachable" in r]
    assert output and "@th,112,8 41" in output[0] and output[0].strip().endswith("drop")
    assert "hook output" in tx._ruleset()
    tx.pass_tunnel_fragments(False)
    assert "frag" not in tx._ruleset() and "hook output" not in tx._ruleset()
    tx.stop()
    bare = RawTransport(Clock(), interfaces=["eth0"], system=FakeSystem(), netfilter=False)
    with pytest.raises(RuntimeError, match="netfilter guard"):
        bare.pass_tunnel_fragments(True)


# -- the backends ---------------------------------------------------------------------------

class _Transport:
    """Sends, and lets fragments through when asked (as RawTransport does)."""

    def __init__(self):
        self.sent = []
        self.counters = Counter()
        self.fragments = []
        self.mark = None

    def send(self, packet, interface=None):
        self.sent.append(packet)

    def pass_tunnel_fragments(self, enabled=True):
        self.fragments.append(enabled)


def _super_backend(cls=TunBackend, **kw):
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, HA]}}, system=system)
    tx = _Transport()
    b = cls(MemoryReactor(), tx, netlink=nl, system=system, super_packets=True, **kw)
    sock = _Sock()
    b.tunnel_socket = TunnelSocket(MemoryReactor(), b.hop_limit, opener=lambda: sock)
    b.kernel_sum = None  # sums in Python (KernelSum has tests of its own)
    b.start()
    return b, tx, sock


def test_home_agent_sends_super_packets_to_home_addresses_whole():
    """At the home agent, a GSO read to a home address leaves whole through the tunnel
    socket, from the route's local address to the care-of address, with scapy's TCP
    checksum; one to a mobile network prefix (a kernel mobile router could not forward it
    whole) and a read without GSO go the usual way, as wire-sized tunnel packets."""
    b, tx, sock = _super_backend()
    assert b.tun.offload and tx.fragments == [True]
    b.install(ForwardingRoute(HOME, COA, HA, (MNP,), True))
    good = _tcp(CN, HOME, bytes(range(256)) * 40)
    b.tun.file.queue.append(_gso_frame(good))
    b.tun.doRead()
    inner, anc, address = sock.sent[-1]
    assert inner == good and address[0] == str(COA)
    assert anc[0][2][:16] == HA.packed
    assert b.counters["super_sent"] == 1
    to_prefix = _tcp(CN, MNP[5], bytes(5000))
    b.tun.file.queue.append(_gso_frame(to_prefix))
    b.tun.doRead()
    assert len(sock.sent) == 1 and len(tx.sent) == 4  # cut into 4 tunnel packets
    assert all(p[6] == 41 and len(p) <= 1500 for p in tx.sent)
    b.tun.file.inject(_tcp(CN, HOME, bytes(100)))
    b.tun.doRead()
    assert len(sock.sent) == 1 and len(tx.sent) == 5
    b.stop()
    assert sock.closed and tx.fragments == [True, False]


def test_home_agent_writes_reassembled_super_packets_as_gso_and_checks_them():
    """A reassembled tunnel packet from the care-of address with the home address as inner
    source is written to the TUN as GSO (pseudo-header sum in the field); a small one as it
    is; one from an unknown care-of address, to another local address, with a spoofed inner
    source or a wrong length is counted and dropped (no open relay), and so is one whose TCP
    checksum is wrong (the kernel would trust a GSO packet's)."""
    b, tx, sock = _super_backend()
    b.install(ForwardingRoute(HOME, COA, HA, (MNP,), True))
    big = _tcp(HOME, CN, bytes(30000))
    b._from_tunnel_socket(COA.packed, HA.packed, big)
    vnet, written = b.tun.file.written_vnet[-1], b.tun.file.written[-1]
    assert VNET_HDR.unpack(vnet)[:2] == (1, 4)
    assert written[:56] == big[:56] and written[58:] == big[58:]
    assert written[56:58] == pseudo_sum(big)
    assert b.counters["super_received"] == 1
    small = _tcp(HOME, CN, bytes(100))
    b._from_tunnel_socket(COA.packed, HA.packed, small)
    assert b.tun.file.written[-1] == small and b.tun.file.written_vnet[-1] == bytes(10)
    n = len(b.tun.file.written)
    b._from_tunnel_socket(IPv6Address("2001:db8:20::99").packed, HA.packed, big)
    b._from_tunnel_socket(COA.packed, IPv6Address("2001:db8:1::2").packed, big)
    b._from_tunnel_socket(COA.packed, HA.packed, _tcp(CN, CN, bytes(3000)))
    b._from_tunnel_socket(COA.packed, HA.packed, big[:-1])
    damaged = bytearray(big)
    damaged[-100] ^= 0x40
    b._from_tunnel_socket(COA.packed, HA.packed, bytes(damaged))
    assert len(b.tun.file.written) == n
    assert b.counters["super_checksum_bad"] == 1
    assert b.counters["decap_unknown_care_of"] == 1
    assert b.counters["decap_wrong_local"] == 1
    assert b.counters["decap_spoofed_source"] == 1
    assert b.counters["decap_malformed"] == 1


def test_mobile_tunnel_sends_from_the_home_address_only_and_checks_what_comes():
    """The node sends its own super-packets (home address source) whole from the care-of
    address to its home agent; a mobile network's go the usual way; a reassembled one from
    its home agent to the home address is written as GSO, one from another address is
    dropped."""
    t, tx, sock = _super_backend(MobileTunnel)
    t.set_endpoint(HOME, COA, HA, prefixes=(MNP,))
    own = _tcp(HOME, CN, bytes(6000))
    t.tun.file.queue.append(_gso_frame(own))
    t.tun.doRead()
    inner, anc, address = sock.sent[-1]
    assert inner == own and address[0] == str(HA) and anc[0][2][:16] == COA.packed
    t.tun.file.queue.append(_gso_frame(_tcp(MNP[9], CN, bytes(6000))))
    t.tun.doRead()
    assert len(sock.sent) == 1 and len(tx.sent) == 5
    big = _tcp(CN, HOME, bytes(9000))
    t._from_tunnel_socket(HA.packed, COA.packed, big)
    assert VNET_HDR.unpack(t.tun.file.written_vnet[-1])[1] == 4
    t._from_tunnel_socket(IPv6Address("2001:db8:1::7").packed, COA.packed, big)
    assert t.counters["decap_unknown_peer"] == 1 and t.counters["super_received"] == 1


def test_super_packets_need_a_transport_that_passes_fragments():
    """Started with a transport that cannot let fragments through its guard, the backend
    refuses to start with a message saying so and leaves the TUN closed."""
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, HA]}}, system=system)

    class _Plain:
        counters = Counter()

        def send(self, packet, interface=None):
            pass

    b = TunBackend(MemoryReactor(), _Plain(), netlink=nl, system=system, super_packets=True)
    b.tunnel_socket = TunnelSocket(MemoryReactor(), 64, opener=_Sock)
    b.kernel_sum = None
    with pytest.raises(RuntimeError, match="raw transport"):
        b.start()
    assert not b.running and all(f.closed for f in system.tuns.values())


def test_configuration_key():
    """[backend:tun] super-packets: off by default (no tunnel socket), yes builds one; a
    value that is not yes/no stops start-up naming section, key and line."""
    assert options_of(parse_ini("[backend:tun]\n")["backend:tun"])["super_packets"] is False
    kw = options_of(parse_ini("[backend:tun]\nsuper-packets = yes\n")["backend:tun"])
    b = TunBackend(MemoryReactor(), _Transport(), netlink=FakeNetlink(), system=FakeSystem(),
                   **kw)
    assert b.super_packets and b.tunnel_socket is not None
    with pytest.raises(ConfigError) as e:
        options_of(parse_ini("[backend:tun]\nmtu = 1400\nsuper-packets = maybe\n")
                   ["backend:tun"])
    text = str(e.value)
    assert "super-packets" in text and "backend:tun" in text and ":3:" in text


def test_daemon_configurations_carry_the_option(tmp_path):
    """A lab deployment with ``tun_options`` writes the key into the home agents' and the
    node's [backend:tun]; the daemons' loaders accept it and the tunnels they build have
    super-packets on (the benchmark's tun_super case relies on this)."""
    from haha.config import load_home_agent, load_mobile_node
    from haha.lab import topology
    from haha.lab.deploy import NetnsDeployment

    d = NetnsDeployment(topology.shared_home_link(n_has=2, tag="cfgtest"), tmp_path,
                        tun_options=["super-packets = yes"])
    d.write()
    for config in [load_home_agent(ha.config) for ha in d.has] + [load_mobile_node(d.mn.config)]:
        assert config.backend.name == "tun"
        assert options_of(config.backend.options)["super_packets"] is True
    plain = NetnsDeployment(topology.shared_home_link(n_has=1, tag="cfgtest"), tmp_path / "p")
    plain.write()
    assert options_of(load_home_agent(plain.has[0].config).backend.options)[
        "super_packets"] is False


def test_home_agent_super_path_edge_cases():
    """A GSO read with Hop Limit 0 is dropped and counted (the kernel forwarded it: nothing
    may forward it further); one too long for one tunnel packet (over 65,535 octets) and one
    the socket refuses are cut into segments instead, counted; ECN-marked GSO goes whole;
    one whose Payload Length does not match its length never goes whole."""
    b, tx, sock = _super_backend()
    b.install(ForwardingRoute(HOME, COA, HA, (), True))
    expired = bytearray(_tcp(CN, HOME, bytes(5000)))
    expired[7] = 0
    b.tun.file.queue.append(_gso_frame(bytes(expired)))
    b.tun.doRead()
    assert b.counters["hop_limit_exceeded"] == 1 and not sock.sent and not tx.sent
    huge = _tcp(CN, HOME, bytes(65500))
    assert len(huge) > 65535
    b.tun.file.queue.append(_gso_frame(huge, gso_size=1400))
    b.tun.doRead()
    assert b.counters["super_too_big"] == 1 and not sock.sent
    assert len(tx.sent) == 47 and all(len(p) <= 1500 for p in tx.sent)
    sock.fail_with = errno.EMSGSIZE
    tx.sent.clear()
    b.tun.file.queue.append(_gso_frame(_tcp(CN, HOME, bytes(5000))))
    b.tun.doRead()
    assert b.counters["super_send_failed"] == 1 and len(tx.sent) == 4
    sock.fail_with = None
    ecn = bytearray(_gso_frame(_tcp(CN, HOME, bytes(5000))))
    ecn[1] |= 0x80
    b.tun.file.queue.append(bytes(ecn))
    b.tun.doRead()
    assert b.counters["super_sent"] == 1 and len(sock.sent) == 1
    wrong = bytearray(_gso_frame(_tcp(CN, HOME, bytes(5000))))
    wrong[14:16] = (5000).to_bytes(2, "big")  # Payload Length not the packet's
    b.tun.file.queue.append(bytes(wrong))
    b.tun.doRead()
    assert len(sock.sent) == 1  # not sent whole
