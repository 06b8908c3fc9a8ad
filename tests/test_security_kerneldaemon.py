"""The daemon's side of the kernel ESP modes on the host: the transport that sends the
Mobility Header through the kernel's xfrm and takes it back only after the kernel's checks, and
the SA-database stand-in the unchanged pipeline calls (fake socket, fake raw transport, in-memory
xfrm seam)."""

import socket
from ipaddress import IPv6Address

import pytest
from twisted.internet.task import Clock

from haha.errors import StartupError
from haha.security.errors import SecurityError
from haha.security.kerneldaemon import KernelEspTransport, KernelSadb
from haha.security.kernelmode import ExternalCheck, KernelXfrm, kernel_pairs
from haha.security.keys import derive_pair
from haha.security.sadb import HOME_AGENT, SecurityAssociationDatabase
from haha.security.xfrm import FakeXfrm
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import HaHello, encode_mh

LOCAL = IPv6Address("2001:db8:1::1")
PEER = IPv6Address("2001:db8:2::1")
STRANGER = IPv6Address("2001:db8:9::9")
SECRET = bytes(range(32))


class FakeRaw:
    def __init__(self):
        self.sent, self.started, self.stopped, self.kernel_esp = [], None, False, False
        self.counters = {"sent": 0}

    def start(self, receiver):
        self.started = receiver

    def stop(self):
        self.stopped = True

    def send(self, data, interface=None):
        self.sent.append(data)

    def leave_esp_to_kernel(self, enabled=True):
        self.kernel_esp = enabled


class FakeSocket:
    def __init__(self):
        self.sent, self.closed = [], False

    def sendmsg(self, buffers, ancillary, flags, address):
        self.sent.append((b"".join(buffers), ancillary, address))

    def fileno(self):
        return 99

    def close(self):
        self.closed = True


class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.readers = set()

    def addReader(self, r):  # noqa: N802
        self.readers.add(r)

    def removeReader(self, r):  # noqa: N802
        self.readers.discard(r)


def _hello(src, dst):
    return encode_mh(HaHello(sequence=1, preference=10, lifetime=30, interval=5,
                             prefix_length=64, home_agent=src), src, dst)


@pytest.fixture
def kernel(tmp_path):
    seam = FakeXfrm()
    mode = KernelXfrm(seam, LOCAL, kernel_pairs(LOCAL, [(PEER, SECRET, HOME_AGENT)]),
                      str(tmp_path / "x.json"))
    raw, sock, reactor = FakeRaw(), FakeSocket(), FakeReactor()
    t = KernelEspTransport(raw, mode, reactor, open_socket=lambda: sock)
    got = []
    t.start(got.append)
    sadb = KernelSadb(mode.esp, LOCAL, {PEER: LOCAL}, {PEER: HOME_AGENT})
    return t, raw, sock, got, sadb


def test_start_installs_then_receives_and_stop_removes(kernel):
    """start installs the kernel's entries, leaves ESP and MH to the kernel and reads the MH
    socket; stop closes it, stops the raw transport and removes the entries."""
    t, raw, sock, _got, _ = kernel
    assert t.mode.seam.sas and raw.kernel_esp and raw.started is not None
    assert len(t.reactor.readers) == 1
    t.stop()
    assert sock.closed and raw.stopped and t.mode.seam.sas == {} and not t.reactor.readers


def test_a_kernel_refusal_at_start_is_a_startup_error_and_nothing_runs(tmp_path):
    """When the kernel refuses the SAs, start raises a StartupError naming the reason, and
    neither the raw transport nor the MH socket was started."""
    seam = FakeXfrm()
    seam.fail_next(1, "Requested AEAD algorithm not found")
    mode = KernelXfrm(seam, LOCAL, kernel_pairs(LOCAL, [(PEER, SECRET, HOME_AGENT)]), None)
    raw = FakeRaw()
    opened = []
    t = KernelEspTransport(raw, mode, FakeReactor(), open_socket=lambda: opened.append(1))
    with pytest.raises(StartupError, match="AEAD algorithm not found"):
        t.start(lambda data: None)
    assert raw.started is None and opened == []


def test_protected_messages_leave_through_the_kernel_and_the_rest_through_raw(kernel):
    """What the adapter builds around a message KernelSadb 'protected' (next header 50, the
    MH in the clear) goes to the MH socket from its source address, checksum left to the
    kernel; any other packet goes through the raw transport; a message for a node away from
    home (type 2 routing header) is refused and counted."""
    t, raw, sock, _got, sadb = kernel
    mh = _hello(LOCAL, PEER)
    payload = sadb.protect(PEER, 135, mh)
    assert payload == mh
    t.send(build_packet(LOCAL, PEER, 50, payload))
    data, anc, address = sock.sent[0]
    assert data == mh[:4] + b"\0\0" + mh[6:] and address == (str(PEER), 0)
    assert anc[0][:2] == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)
    assert anc[0][2][:16] == LOCAL.packed
    icmp = build_packet(LOCAL, PEER, 58, b"\x80\0\0\0\0\0\0\0")
    t.send(icmp)
    assert raw.sent == [icmp]
    t.send(build_packet(LOCAL, IPv6Address("2001:db8:99::1"), 50, mh,
                        routing_address=PEER))
    assert t.counters["kernel-esp.send-refused-extension-headers"] == 1
    assert len(sock.sent) == 1
    with pytest.raises(SecurityError) as e:
        sadb.protect(STRANGER, 135, mh)
    assert e.value.reason == "no-sa"


def test_inbound_mh_only_from_the_kernel_and_marked_by_its_policy(kernel):
    """A Mobility Header from the packet socket (not through the kernel) is dropped; one the
    kernel delivered under a policy requiring ESP reaches the adapter as next header 50, which
    KernelSadb opens naming the peer; one without such a policy arrives plain (haha's policy
    judges it); ESP on the link goes to the epoch watcher, never to the adapter; anything else
    passes."""
    t, raw, _sock, got, sadb = kernel
    mh = _hello(PEER, LOCAL)
    raw.started(build_packet(PEER, LOCAL, 135, mh))
    assert got == [] and t.counters["kernel-esp.link-mh-dropped"] == 1
    t.deliver_mh(mh, PEER, LOCAL)
    p = parse_packet(got[-1])
    assert p.next_header == 50 and p.src == PEER
    assert sadb.unprotect(p.source, p.payload) == (PEER, 135, mh)
    assert sadb.knows(p.payload) and sadb.role_of(PEER) == HOME_AGENT
    t.deliver_mh(mh, STRANGER, LOCAL)
    assert parse_packet(got[-1]).next_header == 135
    with pytest.raises(SecurityError) as e:
        sadb.unprotect(STRANGER, mh)
    assert e.value.reason == "unprotected"
    user = SecurityAssociationDatabase.from_specs(
        derive_pair(SECRET, PEER, LOCAL, epoch=(7 << 24) | 1))
    n = len(got)
    raw.started(build_packet(PEER, LOCAL, 50, user.protect(LOCAL, 135, mh)))
    assert len(got) == n and t.counters["kernel-xfrm.epoch-rekeys"] == 1
    ra = build_packet(IPv6Address("fe80::1"), IPv6Address("ff02::1"), 58, b"\x86" + b"\0" * 15)
    raw.started(ra)
    assert got[-1] == ra


def test_external_mode_checks_again_every_interval_and_counts(tmp_path):
    """External: the start-up check refuses a peer without SAs; once they exist it starts,
    and the check runs again every external-check-interval seconds on the reactor's clock,
    counting what went missing since."""
    seam = FakeXfrm()
    mode = ExternalCheck(seam, LOCAL, [PEER])
    reactor = FakeReactor()
    t = KernelEspTransport(FakeRaw(), mode, reactor, check_interval=30,
                           open_socket=FakeSocket)
    with pytest.raises(StartupError, match="no ESP SA"):
        t.start(lambda data: None)
    from haha.security.kernelmode import KernelXfrm as KX

    KX(seam, LOCAL, kernel_pairs(LOCAL, [(PEER, SECRET, HOME_AGENT)])).start()  # "IKE"
    t.start(lambda data: None)
    assert mode.counters["external.checks"] == 2
    seam.pols.clear()
    reactor.advance(30)
    assert mode.counters["external.checks"] == 3
    assert mode.counters["external.missing-policy"] == 2 + 2  # at the refused start, now
    t.stop()
    assert seam.sas  # not haha's: left alone


def test_the_raw_guard_leaves_esp_and_mh_to_the_kernel():
    """RawTransport.leave_esp_to_kernel(): the nft guard stops dropping ESP and MH (so the
    kernel's xfrm receives them), alone and together with the kernel's tunnels (then the
    protocol rule goes), keeping the type 2 routing header and HAO-ICMPv6 rules; the packet
    socket still hands ESP up (the epoch watcher); False restores the default."""
    from twisted.internet.testing import MemoryReactor

    from haha.io.raw import RawTransport
    from haha.io.system import FakeSystem

    system = FakeSystem({"lo": 1, "eth0": 2})
    t = RawTransport(MemoryReactor(), system=system, table="haha_test_1")
    t.start(lambda data: None)
    assert "meta l4proto { 41, 50, 135 }" in system.nft_scripts[-1]
    t.leave_esp_to_kernel()
    script = system.nft_scripts[-1]
    assert "meta l4proto { 41 } counter drop" in script and "rt type 2" in script
    t.leave_tunnels_to_kernel()
    script = system.nft_scripts[-1]
    assert "meta l4proto" not in script and "rt type 2 counter drop" in script
    assert "icmpv6 type { 144, 145, 146, 147 }" in script
    esp = build_packet(PEER, LOCAL, 50, bytes(40))
    assert system.packet_sockets[0].inject(esp)
    t.leave_esp_to_kernel(False)
    assert "meta l4proto { 50, 135 }" in system.nft_scripts[-1]
    t.stop()
