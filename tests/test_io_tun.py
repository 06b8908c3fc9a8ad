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
