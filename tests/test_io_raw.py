"""RawTransport against the in-memory OS seam (haha.io.system.FakeSystem): tier 2, no root.

The fake packet socket runs the attached BPF program through the interpreter, as the kernel
would, so these tests see what would reach Python on a real system.
"""

import errno
from ipaddress import IPv6Address

import pytest
from twisted.internet.testing import MemoryReactor
from zope.interface.verify import verifyObject

from haha.interfaces import IMobilityTransport
from haha.io import bpf
from haha.io.raw import RawTransport, nft_ruleset
from haha.io.system import FakeSystem
from haha.wire.ipv6 import build_packet

A = IPv6Address("2001:db8::1")
B = IPv6Address("2001:db8::2")
HOME = IPv6Address("2001:db8:1::9")
BU = build_packet(A, B, 135, bytes(16), home_address=HOME)
UDP = build_packet(A, B, 17, bytes(8))


def _started(**kw):
    system = FakeSystem({"lo": 1, "eth0": 2, "eth1": 3})
    reactor = MemoryReactor()
    t = RawTransport(reactor, system=system, table="haha_test_1", **kw)
    got = []
    t.start(got.append)
    return t, system, reactor, got


def test_provides_the_transport_interface():
    """RawTransport provides IMobilityTransport."""
    t = RawTransport(MemoryReactor(), system=FakeSystem())
    assert verifyObject(IMobilityTransport, t)


def test_start_installs_filter_table_and_readers():
    """start() creates one packet socket per interface with the mobility filter attached, a raw
    socket, the nft table, and registers the readers with the reactor; stop() undoes it all."""
    t, system, reactor, _ = _started(interfaces=["eth0", "eth1"])
    assert [s.interface for s in system.packet_sockets] == ["eth0", "eth1"]
    assert all(s.filter == t.program for s in system.packet_sockets)
    assert len(system.raw_sockets) == 1
    assert ("ip6", "haha_test_1") in system.nft_tables
    assert len(reactor.readers) == 2
    t.stop()
    assert not reactor.readers
    assert all(s.closed for s in system.packet_sockets) and system.raw_sockets[0].closed
    assert system.nft_tables == set()
    t.stop()  # idempotent
    assert system.nft_scripts[-1].startswith("delete table ip6 haha_test_1")


def test_each_packet_socket_gets_the_configured_receive_buffer():
    """receive_buffer is asked for on every packet socket; 0 leaves the kernel's default."""
    _, system, _, _ = _started(interfaces=["eth0", "eth1"], receive_buffer=1 << 22)
    assert [s.receive_buffer for s in system.packet_sockets] == [1 << 22, 1 << 22]
    _, system, _, _ = _started(interfaces=["eth0"])
    assert system.packet_sockets[0].receive_buffer is None


def test_a_mark_set_before_start_is_on_the_raw_socket():
    """RawTransport.mark becomes the raw socket's SO_MARK (a mobile node's tunnel tells its own
    packets apart by it); without one the socket is unmarked."""
    t = RawTransport(MemoryReactor(), system=FakeSystem(), table="haha_test_2")
    t.mark = 19790
    t.start(lambda p: None)
    assert t._system.raw_sockets[0].mark == 19790
    _, system, _, _ = _started()
    assert system.raw_sockets[0].mark is None


def test_receive_path_counts_and_filters():
    """Mobility packets reach the receiver with the interface named; unrelated traffic is
    refused by the filter before Python; outgoing copies and short packets are counted."""
    t, system, reactor, got = _started(interfaces=["eth0"])
    sock = system.packet_sockets[0]
    seen_interface = []
    t._receiver = lambda p: (got.append(p), seen_interface.append(t.last_interface))
    assert sock.inject(BU) is True
    assert sock.inject(UDP) is False
    sock.queue.append((BU, ("eth0", 0x86DD, bpf.PACKET_OUTGOING, 1, b"")))
    sock.queue.append((b"\x60" + bytes(10), ("eth0", 0x86DD, 0, 1, b"")))
    next(iter(reactor.readers)).doRead()
    assert got == [BU] and seen_interface == ["eth0"]
    assert t.last_interface is None
    assert t.counters["received"] == 1
    assert t.counters["ignored_outgoing"] == 1
    assert t.counters["received_malformed"] == 1


def test_packets_are_read_into_one_buffer_and_copied_out_at_their_own_size():
    """Each packet is read into the transport's one buffer (``recvmsg_into``, always the same
    buffer; ``recvmsg`` made a 64 KiB object per packet and left the C allocator's heap
    fragmented after a burst) and handed over as bytes of its own length that later reads into
    the same buffer do not change: a long packet then a short one arrive as sent."""
    t, system, reactor, got = _started(interfaces=["eth0"])
    sock = system.packet_sockets[0]
    seen = []
    read_into = sock.recvmsg_into

    def recording(buffers, ancbufsize=0):
        seen.append([id(b) for b in buffers])
        return read_into(buffers, ancbufsize)

    sock.recvmsg_into = recording
    long = build_packet(A, B, 135, bytes(range(200)), home_address=HOME)
    assert sock.inject(long) and sock.inject(BU)
    next(iter(reactor.readers)).doRead()
    assert got == [long, BU] and all(type(p) is bytes for p in got)
    assert len(seen) == 3 and seen[0] == seen[1] == seen[2]  # the third finds none left


def test_the_fake_packet_socket_reads_into_buffers_like_the_kernel():
    """FakePacketSocket.recvmsg_into fills the buffers in order, answers the length written,
    and says MSG_TRUNC when they were too short for the frame (the rest is lost)."""
    import socket as _socket

    system = FakeSystem({"eth0": 2})
    sock = system.packet_socket("eth0")
    sock.inject(BU)
    sock.inject(BU)
    a, b = bytearray(10), bytearray(len(BU))
    n, _, flags, addr = sock.recvmsg_into([a, b])
    assert n == len(BU) and bytes(a + b[:n - 10]) == BU and flags == 0 and addr[0] == "eth0"
    small = bytearray(8)
    n, _, flags, _ = sock.recvmsg_into([small])
    assert n == 8 and bytes(small) == BU[:8] and flags == _socket.MSG_TRUNC


def test_receiver_and_socket_errors_are_counted_not_raised():
    """An exception in the receiver and a socket error are logged and counted; reading goes on
    with the next packet."""
    t, system, reactor, _ = _started()
    sock = system.packet_sockets[0]
    calls = []

    def bad(p):
        calls.append(p)
        raise ValueError("boom")

    t._receiver = bad
    sock.inject(BU)
    sock.inject(BU)
    reader = next(iter(reactor.readers))
    reader.doRead()
    assert len(calls) == 2 and t.counters["receiver_errors"] == 2
    sock.fail_with = errno.ENETDOWN
    reader.doRead()
    assert t.counters["receive_errors"] == 1


def test_drain_discards_what_was_queued_before_the_filter():
    """Packets queued between socket creation and filter attachment are discarded, counted."""
    system = FakeSystem()
    original = system.packet_socket

    def early(interface=None):
        s = original(interface)
        s.inject(UDP)  # arrives before the filter
        return s

    system.packet_socket = early
    t = RawTransport(MemoryReactor(), system=system, table="haha_test_2")
    t.start(lambda p: None)
    assert t.counters["drained"] == 1
    assert system.packet_sockets[0].queue == []


def test_send_paths():
    """send() writes the packet to the raw socket addressed to its destination; link-scope
    destinations need an interface (argument or default); errors are counted by errno."""
    t, system, _, _ = _started(default_interface="eth1")
    raw = system.raw_sockets[0]
    t.send(BU)
    assert raw.sent[-1] == (BU, (str(B), 0, 0, 0))
    na = build_packet(A, IPv6Address("ff02::1"), 58, bytes(24), hop_limit=255)
    t.send(na)
    assert raw.sent[-1] == (na, ("ff02::1", 0, 0, 3))
    t.send(na, interface="eth0")
    assert raw.sent[-1] == (na, ("ff02::1", 0, 0, 2))
    t.send(b"\x45" + bytes(50))
    assert t.counters["send_invalid"] == 1
    t.send(na, interface="nope")
    assert t.counters["send_errors"] == 1
    raw.fail_with = errno.ENETUNREACH
    t.send(BU)
    assert t.counters["send_error.ENETUNREACH"] == 1 and t.counters["send_errors"] == 2
    assert t.counters["sent"] == 3
    t2, system2, _, _ = _started()
    t2.send(na)
    assert t2.counters["send_no_interface"] == 1 and system2.raw_sockets[0].sent == []


def test_send_before_start_is_counted():
    """Sending on a transport that is not started counts and does nothing."""
    t = RawTransport(MemoryReactor(), system=FakeSystem())
    t.send(BU)
    assert t.counters["send_not_started"] == 1


def test_failed_start_leaves_nothing_behind():
    """When nft fails, start raises its message and no socket stays open; when a packet socket
    cannot be opened, the table installed first is removed again."""
    system = FakeSystem()
    system.nft_fail = "nft: command not found"
    t = RawTransport(MemoryReactor(), system=system)
    with pytest.raises(RuntimeError, match="command not found"):
        t.start(lambda p: None)
    assert system.raw_sockets == [] and not t.running
    system = FakeSystem()
    t = RawTransport(MemoryReactor(), interfaces=["missing0"], system=system, table="haha_x_1")
    with pytest.raises(OSError):
        t.start(lambda p: None)
    assert system.nft_tables == set() and system.raw_sockets[0].closed


def test_stale_tables_of_dead_processes_are_removed():
    """At start, tables named haha_<pid>_<n> whose process is gone are deleted; tables of live
    processes and foreign tables stay."""
    system = FakeSystem()
    import os

    system.nft_tables |= {("ip6", "haha_999999999_1"), ("ip6", f"haha_{os.getpid()}_77"),
                          ("inet", "filter")}
    t = RawTransport(MemoryReactor(), system=system, table="haha_test_3")
    t.start(lambda p: None)
    assert ("ip6", "haha_999999999_1") not in system.nft_tables
    assert ("ip6", f"haha_{os.getpid()}_77") in system.nft_tables
    assert ("inet", "filter") in system.nft_tables


def test_unique_table_names_and_ruleset_text():
    """Each instance gets its own table name; the ruleset drops MH/ESP/IPv6-in-IPv6, type 2
    routing headers and HAO-carrying ICMPv6 144-147 to local addresses (or a given set)."""
    r = MemoryReactor()
    names = {RawTransport(r, system=FakeSystem()).table for _ in range(3)}
    assert len(names) == 3
    text = nft_ruleset("haha_1_1")
    assert "fib daddr type local meta l4proto { 41, 50, 135 } counter drop" in text
    assert "rt type 2 counter drop" in text
    assert "exthdr dst exists icmpv6 type { 144, 145, 146, 147 }" in text
    assert "hook prerouting priority -300" in text
    text = nft_ruleset("haha_1_1", [B, A])
    assert "elements = { 2001:db8::1, 2001:db8::2 }" in text and "@haha_local" in text


def test_addresses_restrict_filter_and_can_change():
    """With addresses the filter refuses other destinations; set_addresses swaps the filter on
    every socket and rewrites the nft table."""
    t, system, reactor, got = _started(addresses=[B])
    sock = system.packet_sockets[0]
    to_a = build_packet(B, A, 135, bytes(16))
    assert sock.inject(BU) and not sock.inject(to_a)
    t.set_addresses([A])
    assert sock.inject(to_a) and not sock.inject(BU)
    assert "2001:db8::1" in system.nft_scripts[-1]
    with pytest.raises(TypeError):
        t.set_addresses(["2001:db8::1"])


def test_proxy_nd_types_are_optional():
    """NS/NA reach Python only when proxy_nd=True."""
    ns = build_packet(A, B, 58, bytes((135,)) + bytes(23))
    t, system, _, _ = _started()
    assert not system.packet_sockets[0].inject(ns)
    t, system, _, _ = _started(proxy_nd=True)
    assert system.packet_sockets[0].inject(ns)


def test_bad_arguments():
    """A single string for interfaces and non-IPv6Address addresses are refused."""
    with pytest.raises(TypeError):
        RawTransport(MemoryReactor(), interfaces="eth0", system=FakeSystem())
    with pytest.raises(TypeError):
        RawTransport(MemoryReactor(), addresses=["2001:db8::1"], system=FakeSystem())
    t, _, _, _ = _started()
    with pytest.raises(RuntimeError):
        t.start(lambda p: None)


def test_tunnels_left_to_the_kernel():
    """leave_tunnels_to_kernel(): the nft guard drops only ESP and MH (IPv6-in-IPv6 reaches the
    kernel's ip6tnl), the filter stops handing IPv6-in-IPv6 up but still hands up MH; False
    restores both."""
    t, system, reactor, got = _started()
    sock = system.packet_sockets[0]
    tunnelled = build_packet(A, B, 41, bytes(build_packet(HOME, A, 58, bytes(8))))
    assert sock.inject(tunnelled) and not t.kernel_tunnels
    t.leave_tunnels_to_kernel()
    assert t.kernel_tunnels and sock.filter == t.program
    assert not sock.inject(tunnelled) and sock.inject(BU)
    script = system.nft_scripts[-1]
    assert script.startswith("delete table ip6 haha_test_1\n")
    assert "meta l4proto { 50, 135 } counter drop" in script and "41" not in script
    assert ("ip6", "haha_test_1") in system.nft_tables
    t.set_addresses([B])  # a later change of addresses keeps the choice
    assert "meta l4proto { 50, 135 }" in system.nft_scripts[-1] and not sock.inject(tunnelled)
    t.leave_tunnels_to_kernel(False)
    assert sock.inject(tunnelled) and "meta l4proto { 41, 50, 135 }" in system.nft_scripts[-1]


def _tunnelled_udp():
    """IPv6-in-IPv6 carrying UDP whose checksum holds only the pseudo-header sum (what a
    sender with transmit checksum offload leaves), and the same packet finished."""
    from haha.wire import checksum
    inner_body = bytearray(b"\x9c\x40\x14\x51\x00\x0d\x00\x00hello")
    good = bytearray(inner_body)
    good[6:8] = checksum.checksum(A.packed, HOME.packed, 17, bytes(inner_body)).to_bytes(2, "big")
    # The pseudo-header sum alone, folded (RFC 8200 8.1): the complement of the checksum of
    # an upper layer of zeros of the same length, counted without those zeros.
    pseudo = 0
    for w in range(0, 32, 2):
        pseudo += int.from_bytes((A.packed + HOME.packed)[w:w + 2], "big")
    pseudo += len(inner_body) + 17
    while pseudo >> 16:
        pseudo = (pseudo & 0xFFFF) + (pseudo >> 16)
    partial = bytearray(inner_body)
    partial[6:8] = pseudo.to_bytes(2, "big")
    wrap = lambda body: build_packet(B, HOME, 41, build_packet(A, HOME, 17, bytes(body)))  # noqa
    return wrap(partial), wrap(good)


def test_checksum_left_to_hardware_is_completed_before_the_receiver():
    """The packet sockets ask for PACKET_AUXDATA; a packet flagged TP_STATUS_CSUMNOTREADY
    reaches the receiver with its inner UDP checksum completed (counted), one without the flag
    unchanged."""
    from haha.io.offload import PACKET_AUXDATA, SOL_PACKET, TP_STATUS_CSUMNOTREADY
    t, system, reactor, got = _started()
    sock = system.packet_sockets[0]
    assert sock.options[(SOL_PACKET, PACKET_AUXDATA)] == 1
    partial, good = _tunnelled_udp()
    assert partial != good
    sock.inject(partial, status=TP_STATUS_CSUMNOTREADY)
    sock.inject(partial)
    next(iter(reactor.readers)).doRead()
    assert got == [good, partial]
    assert t.counters["checksum_completed"] == 1 and t.counters["received"] == 2


def test_checksum_not_completed_when_turned_off_or_impossible():
    """complete_checksums=False hands the packet up as it came; a flagged packet without a
    TCP/UDP header is handed up unchanged and counted as checksum_unfinished."""
    from haha.io.offload import TP_STATUS_CSUMNOTREADY
    t, system, reactor, got = _started()
    sock = system.packet_sockets[0]
    partial, _ = _tunnelled_udp()
    t.complete_checksums = False
    sock.inject(partial, status=TP_STATUS_CSUMNOTREADY)
    next(iter(reactor.readers)).doRead()
    t.complete_checksums = True
    sock.inject(BU, status=TP_STATUS_CSUMNOTREADY)
    next(iter(reactor.readers)).doRead()
    assert got == [partial, BU]
    assert t.counters["checksum_unfinished"] == 1 and not t.counters["checksum_completed"]


def test_tunnel_receiver_takes_ipv6_in_ipv6_only():
    """With set_tunnel_receiver, IPv6-in-IPv6 directly after the fixed header goes to the
    tunnel (counted as tunnelled), signalling still to the daemon's receiver; its exceptions
    are counted; None restores the default."""
    t, system, reactor, got = _started()
    sock = system.packet_sockets[0]
    tunnelled = build_packet(B, A, 41, build_packet(HOME, B, 59, b""))
    tunnel = []
    t.set_tunnel_receiver(tunnel.append)
    sock.inject(tunnelled)
    sock.inject(BU)
    next(iter(reactor.readers)).doRead()
    assert tunnel == [tunnelled] and got == [BU] and t.counters["tunnelled"] == 1
    t.set_tunnel_receiver(lambda p: 1 / 0)
    sock.inject(tunnelled)
    next(iter(reactor.readers)).doRead()
    assert t.counters["receiver_errors"] == 1
    t.set_tunnel_receiver(None)
    sock.inject(tunnelled)
    next(iter(reactor.readers)).doRead()
    assert got == [BU, tunnelled]


def test_send_encapsulated_gathers_header_and_packet():
    """send_encapsulated sends header and payload as one packet to the header's destination
    (socket address kept per destination); a link-local destination goes through send(), with
    its scope; before start it is counted as send_not_started; a failing socket is counted
    every time but logged at most once a second."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher
    inner = build_packet(HOME, A, 59, b"x" * 20)
    header = build_packet(A, B, 41, inner)[:40]
    t0 = RawTransport(MemoryReactor(), system=FakeSystem())
    t0.send_encapsulated(header, inner)
    assert t0.counters["send_not_started"] == 1
    t, system, _, _ = _started(default_interface="eth1")
    raw = system.raw_sockets[0]
    t.send_encapsulated(header, memoryview(inner))
    t.send_encapsulated(header, inner)
    assert raw.sent == [(header + inner, (str(B), 0, 0, 0))] * 2
    ll = build_packet(A, IPv6Address("fe80::2"), 41, inner)[:40]
    t.send_encapsulated(ll, inner)
    assert raw.sent[-1] == (ll + inner, ("fe80::2", 0, 0, 3))
    assert t.counters["sent"] == 3
    clock = Clock()
    t._reactor = clock
    raw.fail_with = errno.ENOBUFS
    seen = []
    observer = lambda e: seen.append(e) if "failed" in e.get("log_format", "") else None  # noqa
    globalLogPublisher.addObserver(observer)
    try:
        for _ in range(50):
            t.send_encapsulated(header, inner)
        clock.advance(1.5)
        t.send_encapsulated(header, inner)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert t.counters["send_error.ENOBUFS"] == 51 and len(seen) == 2


def test_guard_lets_plain_tcp_and_udp_go_before_any_address_test():
    """The guard's first prerouting rule accepts TCP and UDP directly after the fixed header
    (they match none of its drop rules), so the packets a home agent forwards cost no FIB
    look-up there; every rule that tests the address comes after it, and the tunnel-fragment
    rule tests the protocol before the address."""
    t, system, _, _ = _started()
    t.pass_tunnel_fragments(True)
    rules = [r.strip() for r in t._ruleset().split("chain prerouting {\n")[1]
             .split("\n  }")[0].splitlines()]
    assert rules[1] == "ip6 nexthdr { 6, 17 } accept"
    assert all("fib daddr type local" in r for r in rules[2:]), rules
    assert rules[2].startswith("meta l4proto 41 exthdr frag exists fib daddr")
