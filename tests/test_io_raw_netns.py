"""Tier 3: the raw transport on a real kernel, between two network namespaces on one veth link.

Ordering on a veth link is first-in first-out and the kernel answers a packet (or not) while it
processes it, so "the kernel did not answer X" is observed with a barrier: after X the sender
sends an ICMPv6 echo request, and once its reply is back every answer to X would have been back
too.
"""

import re
import socket
import struct
from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from reactor_wait import wait_for
from haha.backends.netlink import read_kernel_config
from haha.io import bpf
from haha.io.raw import RawTransport
from haha.io.system import ETH_P_ALL, LinuxSystem, in_netns
from haha.lab.topology import Topology
from haha.wire import checksum
from haha.wire.ipv6 import build_packet
from haha.wire.mh import BindingAck, BindingUpdate, encode_mh

A = IPv6Address("2001:db8:5::1")
B = IPv6Address("2001:db8:5::2")
HOME = IPv6Address("2001:db8:1::77")


def _kernel_has_mip6():
    """Whether the running kernel has Mobile IPv6 (CONFIG_IPV6_MIP6), from its configuration;
    fails when the configuration cannot be read (the expectation differs)."""
    config = read_kernel_config()
    assert config is not None, "cannot read the kernel configuration (/proc/config.gz, /boot)"
    return re.search(r"^CONFIG_IPV6_MIP6=[ym]$", config, re.M) is not None


def _wait(predicate, what="condition"):
    return wait_for(predicate, 5.0, what)


def _pair():
    t = Topology()
    t.add_node("a").add_node("b")
    t.add_link("l", ("a", "eth0", [f"{A}/64"]), ("b", "eth0", [f"{B}/64"]))
    return t.create()


def _echo(src, dst, ident, seq=1):
    body = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + b"barrier"
    c = checksum.checksum(src.packed, dst.packed, 58, body)
    return build_packet(src, dst, 58, body[:2] + c.to_bytes(2, "big") + body[4:])


def _bu():
    mh = encode_mh(BindingUpdate(sequence=7, lifetime=10), HOME, B)
    return build_packet(A, B, 135, mh, home_address=HOME)


def _ba_rh2():
    mh = encode_mh(BindingAck(status=0, sequence=7, lifetime=10), A, HOME)
    return build_packet(A, B, 135, mh, routing_address=HOME)


class _Probe:
    """Node a: sends through its own raw transport and collects ICMPv6 errors and echo replies
    (types 1-4 and 129) arriving from b."""

    def __init__(self, topo):
        self.got = []
        self.tx = RawTransport(reactor, interfaces=["eth0"], icmp_types={1, 2, 3, 4, 129},
                               netfilter=False, system=LinuxSystem(topo.ns("a")))
        self.tx.start(self.got.append)
        self.ident = 0

    def types(self):
        return [p[40] for p in self.got if p[6] == 58]

    @defer.inlineCallbacks
    def send_then_barrier(self, *packets):
        """Send ``packets`` then an echo request; wait for its reply; return the ICMPv6 types
        that arrived before the reply."""
        self.ident += 1
        self.got.clear()
        for p in packets:
            self.tx.send(p)
        self.tx.send(_echo(A, B, self.ident))
        yield _wait(lambda: 129 in self.types(), what="echo reply")
        types = self.types()
        return types[: types.index(129)]


@pytest.mark.netns
@pytest.mark.stock_kernel
@pytest_twisted.inlineCallbacks
def test_nft_guard_keeps_kernel_from_answering_parameter_problem(require_root):
    """Without haha's netfilter table, a kernel without mip6 (this project's) answers a Binding
    Update with a Home Address option, and a packet with a type 2 routing header, with ICMPv6
    Parameter Problem, and a kernel with mip6 (a stock one) drops both silently; with the table
    (installed by RawTransport.start) neither kernel answers, the table's rule counts both, and
    both packets still reach the receiver byte for byte. Stopping the transport removes the
    table."""
    topo = _pair()
    probe = b_tx = None
    mip6 = _kernel_has_mip6()
    try:
        probe = _Probe(topo)
        bu, ba = _bu(), _ba_rh2()
        before = yield probe.send_then_barrier(bu, ba)
        # two Parameter Problems without mip6, nothing with it
        assert before == ([] if mip6 else [4, 4]), (mip6, before)

        got = []
        b_tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(topo.ns("b")))
        b_tx.start(got.append)
        tables = topo.run("b", ["nft", "list", "tables"]).stdout
        assert f"table ip6 {b_tx.table}" in tables
        after = yield probe.send_then_barrier(bu, ba)
        assert 4 not in after, after
        yield _wait(lambda: len(got) == 2, what="both packets at the receiver")
        assert got == [bu, ba]
        assert b_tx.counters["received"] == 2
        ruleset = topo.run("b", ["nft", "list", "table", "ip6", b_tx.table]).stdout
        assert "packets 2" in ruleset  # the l4proto rule dropped both (MH) in prerouting

        b_tx.stop()
        assert b_tx.table not in topo.run("b", ["nft", "list", "tables"]).stdout
        b_tx = None
    finally:
        for tx in (probe.tx if probe else None, b_tx):
            if tx is not None:
                tx.stop()
        topo.destroy()


def _udp(src, dst):
    body = struct.pack("!HHHH", 4000, 5000, 12, 0) + b"junk"
    c = checksum.checksum(src.packed, dst.packed, 17, body)
    return build_packet(src, dst, 17, body[:6] + c.to_bytes(2, "big") + body[8:])


def _ext(nh, inner_nh, payload, kind):
    """Wrap ``payload`` (next header ``inner_nh``) in one extension header of type ``kind``."""
    if kind == 43:  # routing header type 0 with segments left 0 (skipped by receivers)
        head = bytes((inner_nh, 0, 0, 0)) + bytes(4)
    else:  # Hop-by-Hop / Destination Options with a PadN
        head = bytes((inner_nh, 0, 1, 4)) + bytes(4)
    return head + payload


def _crafted():
    """Packets whose fate the filter decides: (packet, wanted_by_haha)."""
    cases = []
    esp = struct.pack("!II", 0x1234, 1) + bytes(24)
    for proto, payload, want in ((50, esp, True), (41, _udp(A, B), True),
                                 (17, _udp(A, B)[40:], False), (6, bytes(20), False)):
        cases.append((build_packet(A, B, proto, payload), want))
    for t, want in ((134, True), (144, True), (147, True), (128, False), (135, False)):
        body = bytes((t, 0, 0, 0)) + bytes(12)
        cases.append((build_packet(A, B, 58, body), want))
    # ESP behind a chain of extension headers: accepted up to the walk's bound (4).
    for depth in range(0, 6):
        payload, nh = esp, 50
        for k in range(depth):
            kind = (60, 43, 60, 60, 60, 60)[k]
            payload, nh = _ext(kind, nh, payload, kind), kind
        cases.append((build_packet(A, B, nh, payload), depth <= 4))
    return cases


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_kernel_runs_the_filter_as_the_interpreter_predicts(require_root):
    """The mobility filter attached for real in the kernel lets through exactly the packets the
    pure-Python interpreter accepts (ESP, IPv6-in-IPv6, RA/DHAAD/MPA, extension headers up to
    the bound) and nothing else reaches Python: UDP, TCP, echo requests and NS are counted
    nowhere."""
    topo = _pair()
    probe = b_tx = None
    try:
        probe = _Probe(topo)
        got = []
        # Two of the cases are the same ESP packet: the input queue would drop the second as a
        # repeat (docs/io.md, "Input queues"); this test is about the filter.
        b_tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(topo.ns("b")),
                            supersede=False)
        b_tx.start(got.append)
        cases = _crafted()
        for pkt, want in cases:
            assert bool(bpf.run(b_tx.program, pkt)) == want
        final = _bu()
        for pkt, _ in cases:
            probe.tx.send(pkt)
        probe.tx.send(final)
        yield _wait(lambda: final in got, what="the final Binding Update")
        expected = [p for p, want in cases if want] + [final]
        # Kernel answers (ND from b's own stack) are not ours: only what we sent matters.
        assert [p for p in got if p in expected] == expected
        assert [p for p in got if p not in expected] == []
        assert b_tx.counters["received"] == len(expected)
    finally:
        for tx in (probe.tx if probe else None, b_tx):
            if tx is not None:
                tx.stop()
        topo.destroy()


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_address_filter(require_root):
    """With ``addresses`` set, a mobility packet to another address of the same node is refused
    by the kernel filter while one to a listed address passes."""
    topo = _pair()
    txs = []
    try:
        other = IPv6Address("2001:db8:5::3")
        topo.run("b", ["ip", "-6", "addr", "add", f"{other}/64", "dev", "eth0", "nodad"])
        got = []
        b_tx = RawTransport(reactor, interfaces=["eth0"], addresses=[B],
                            system=LinuxSystem(topo.ns("b")))
        b_tx.start(got.append)
        txs.append(b_tx)
        probe = _Probe(topo)
        txs.append(probe.tx)
        to_other = build_packet(A, other, 135, encode_mh(BindingUpdate(sequence=1), A, other))
        final = _bu()
        probe.tx.send(to_other)
        probe.tx.send(final)
        yield _wait(lambda: final in got, what="the Binding Update to b")
        assert to_other not in got
        assert got == [final]
    finally:
        for tx in txs:
            tx.stop()
        topo.destroy()


def _drain(sock):
    out = []
    while True:
        try:
            out.append(sock.recvfrom(70000))
        except BlockingIOError:
            return out


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_outgoing_copies_are_refused_by_the_kernel_filter(require_root):
    """A packet socket that sees every frame (ETH_P_ALL) gets our own transmissions back as
    PACKET_OUTGOING; with the mobility filter attached the kernel refuses those copies and still
    passes the same kind of packet arriving from the peer."""
    topo = _pair()
    txs, socks = [], []
    try:
        sys_a = LinuxSystem(topo.ns("a"))
        with in_netns(topo.ns("a")):
            plain = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK,
                                  socket.htons(ETH_P_ALL))
            filtered = socket.socket(socket.AF_PACKET,
                                     socket.SOCK_DGRAM | socket.SOCK_NONBLOCK,
                                     socket.htons(ETH_P_ALL))
        socks += [plain, filtered]
        plain.bind(("eth0", ETH_P_ALL))
        filtered.bind(("eth0", ETH_P_ALL))
        sys_a.attach_filter(filtered, bpf.mobility_filter())
        _drain(plain), _drain(filtered)
        a_tx = RawTransport(reactor, netfilter=False, system=sys_a)
        b_tx = RawTransport(reactor, netfilter=False, system=LinuxSystem(topo.ns("b")))
        for tx in (a_tx, b_tx):
            tx.start(lambda p: None)
            txs.append(tx)
        outgoing = _bu()
        mh = encode_mh(BindingUpdate(sequence=9), B, A)
        incoming = build_packet(B, A, 135, mh)
        a_tx.send(outgoing)
        b_tx.send(incoming)
        seen_plain, seen_filtered = [], []

        def arrived():
            seen_plain.extend(_drain(plain))
            seen_filtered.extend(_drain(filtered))
            return any(d == incoming for d, _ in seen_filtered)

        yield _wait(arrived, what="the peer's packet on the filtered socket")
        assert (outgoing, bpf.PACKET_OUTGOING) in [(d, a[2]) for d, a in seen_plain]
        assert [d for d, _ in seen_filtered if d in (outgoing, incoming)] == [incoming]
    finally:
        for tx in txs:
            tx.stop()
        for s in socks:
            s.close()
        topo.destroy()
