"""TunDevice: whole packets in and out of a TUN device (fake seam; one real device in a
network namespace)."""

import errno
from ipaddress import IPv6Address

import pytest
from twisted.internet.testing import MemoryReactor

from haha.io.system import FakeSystem, LinuxSystem
from haha.io.tun import TunDevice
from haha.lab.topology import Topology
from haha.wire.ipv6 import build_packet

P = build_packet(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), 59, b"")


def test_read_write_and_errors_with_the_fake():
    """Packets the kernel routes into the device reach the receiver; writes reach the kernel;
    read/write/receiver errors are counted, never raised; stop closes and unregisters."""
    system = FakeSystem()
    reactor = MemoryReactor()
    got = []
    tun = TunDevice(reactor, "hahat%d", system=system)
    tun.start(got.append)
    assert tun.name == "hahat0" and tun in reactor.readers
    tun.file.inject(P)
    tun.file.inject(P)
    tun.doRead()
    assert got == [P, P] and tun.counters["read"] == 2
    assert tun.write(P) and tun.file.written == [P]
    tun.file.fail_with = errno.EIO
    assert tun.write(P) is False and tun.counters["write_error.EIO"] == 1
    tun._receiver = lambda p: 1 / 0
    tun.file.inject(P)
    tun.doRead()
    assert tun.counters["receiver_errors"] == 1
    f = tun.file
    tun.stop()
    assert f.closed and tun not in reactor.readers
    assert tun.write(P) is False and tun.counters["write_not_open"] == 1
    with pytest.raises(ValueError):
        FakeSystem().open_tun("x" * 16)


@pytest.mark.netns
def test_real_tun_device_in_a_namespace(require_root):
    """LinuxSystem.open_tun creates the device inside the namespace (IFF_TUN|IFF_NO_PI) and
    closing it removes the device."""
    t = Topology()
    t.add_node("n")
    try:
        t.create()
        f, name = LinuxSystem(t.ns("n")).open_tun("hahatst%d")
        try:
            assert name.startswith("hahatst")
            out = t.run("n", ["ip", "-d", "link", "show", name]).stdout
            assert "tun" in out
            with pytest.raises(BlockingIOError):
                f.read(2000)
        finally:
            f.close()
        assert t.run("n", ["ip", "link", "show", name], check=False).returncode != 0
    finally:
        t.destroy()


def _gso_frame(payload_len, mss):
    """A TUN read with a TCPv6 GSO super-packet: virtio_net_hdr + IPv6 + 20-octet TCP +
    payload, checksum field as the kernel leaves it (pseudo-header sum; ignored here)."""
    from haha.io.offload import VNET_HDR, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6
    tcp = bytes(4) + (1000).to_bytes(4, "big") + bytes(4) + bytes([0x50, 0x18]) + bytes(6)
    pkt = build_packet(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), 6,
                       tcp + bytes(payload_len))
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 60, mss, 40,
                         16) + pkt


def test_offload_opens_with_vnet_header_and_cuts_super_packets():
    """start(offload=True) opens the device with IFF_VNET_HDR and asks for partial checksums
    and TCPv6 GSO; a super-packet read once reaches the receiver as wire-sized segments
    (counted); writes carry an empty virtio_net_hdr; a bad header is counted and dropped."""
    from haha.io.system import TUN_F_CSUM, TUN_F_TSO6
    system = FakeSystem()
    got = []
    tun = TunDevice(MemoryReactor(), "hahat%d", system=system)
    tun.start(got.append, offload=True)
    assert tun.file.vnet_hdr and tun.file.offload == TUN_F_CSUM | TUN_F_TSO6
    tun.file.queue.append(_gso_frame(3000, 1400))
    tun.file.inject(P)  # an ordinary packet behind an empty header
    tun.doRead()
    assert [len(p) for p in got] == [60 + 1400, 60 + 1400, 60 + 200, len(P)]
    assert got[-1] == P
    assert tun.counters["read"] == 2 and tun.counters["gso_reads"] == 1
    assert tun.counters["gso_segments"] == 3
    assert tun.write(P) and tun.file.written == [P] and tun.file.written_vnet == [bytes(10)]
    tun.file.queue.append(b"\x01\x04")  # shorter than a virtio_net_hdr
    tun.doRead()
    assert tun.counters["offload_errors"] == 1 and len(got) == 4


def test_write_failures_are_logged_once_a_second_but_all_counted():
    """A flood of failing writes is counted in full but logged at most once per second."""
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher
    clock = Clock()
    tun = TunDevice(clock, "hahat%d", system=FakeSystem())
    clock.addReader = clock.removeReader = lambda r: None
    tun.start(lambda p: None)
    tun.file.fail_with = errno.ENOBUFS
    seen = []
    observer = lambda e: seen.append(e) if "write failed" in e.get("log_format", "") else None  # noqa
    globalLogPublisher.addObserver(observer)
    try:
        for _ in range(100):
            tun.write(P)
        clock.advance(1.0)
        tun.write(P)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert tun.counters["write_errors"] == 101 and len(seen) == 2
