"""Backends holding a home agent address for address take-over (haha.backends.addresses), on
the netlink fake: on the home interface with an unsolicited NA, or on lo with a /128 route
tagged 72; released on request and at stop; a crashed run's held addresses removed by the
next start; the null backend records the intent; the adapter carries the effect out."""

from ipaddress import IPv6Address, IPv6Interface, IPv6Network

import pytest
from twisted.internet.testing import MemoryReactor

from haha.backends.common import Ownership
from haha.backends.netsys import RTPROT_HAHA, FakeNetlink
from haha.backends.null import NullBackend
from haha.backends.tun import TunBackend
from haha.core.effects import HoldAddress
from haha.io.system import FakeSystem
from haha.wire.icmpv6 import NA_O, NeighborAdvertisement, decode_icmpv6
from haha.wire.ipv6 import parse_packet

A = IPv6Address
N = IPv6Network
HA = A("2001:db8:1::1")
DEAD = A("2001:db8:1::2")
PREFIX = N("2001:db8:1::/64")
MAC = b"\x02\xaa\xbb\xcc\xdd\xee"


class _Sender:
    def __init__(self):
        self.sent = []

    def send(self, packet, interface=None):
        self.sent.append((packet, interface))


@pytest.fixture
def host():
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [A("fe80::1"), A("2001:db8:f::2")]},
                      "lo": {"addresses": [A("::1")]}}, system=system)
    return system, nl


def backend(host, tmp_path=None):
    system, nl = host
    b = TunBackend(MemoryReactor(), _Sender(), tun_name="hahat%d", netlink=nl, system=system)
    if tmp_path is not None:
        b.ownership = Ownership(PREFIX, "eth0", frozenset({HA}), str(tmp_path / "ha.state"))
    return b


def test_on_the_home_link_the_address_goes_on_the_interface_with_an_unsolicited_na(host):
    """hold_address(address, 'eth0'): a /128 on eth0 and one NA (O=1) for it to all-nodes."""
    b = backend(host)
    b.start()
    b.hold_address(DEAD, "eth0")
    nl = host[1]
    assert (IPv6Interface(f"{DEAD}/128"), "eth0") in nl.addresses
    packet, interface = b.transport.sent[-1]
    na = decode_icmpv6(parse_packet(packet).payload, A("fe80::1"), A("ff02::1"))
    assert interface == "eth0" and isinstance(na, NeighborAdvertisement)
    assert na.target == DEAD and na.flags & NA_O
    assert b.held == {DEAD: "eth0"}
    b.release_address(DEAD)
    assert (IPv6Interface(f"{DEAD}/128"), "eth0") not in nl.addresses and b.held == {}


def test_without_a_home_link_the_address_is_a_tagged_route_and_on_lo(host):
    """hold_address(address, None): the address on lo and a /128 route with protocol 72 for
    the routing daemon; release removes both."""
    b = backend(host)
    b.start()
    nl = host[1]
    b.hold_address(DEAD, None)
    assert (IPv6Interface(f"{DEAD}/128"), "lo") in nl.addresses
    assert nl.routes[(N(f"{DEAD}/128"), None)]["proto"] == RTPROT_HAHA
    b.release_address(DEAD)
    assert (N(f"{DEAD}/128"), None) not in nl.routes
    assert (IPv6Interface(f"{DEAD}/128"), "lo") not in nl.addresses


def test_stop_releases_every_held_address(host):
    """A clean stop leaves no held address behind."""
    b = backend(host)
    b.start()
    b.hold_address(DEAD, "eth0")
    b.hold_address(HA, None)
    b.stop()
    nl = host[1]
    assert not any(dev in ("eth0", "lo") and i.ip in (DEAD, HA) for i, dev in nl.addresses)
    assert (N(f"{HA}/128"), None) not in nl.routes


def test_a_restart_removes_the_addresses_a_crashed_run_held(host, tmp_path):
    """kill -9 leaves the held addresses (the kernel keeps answering for them); the next start
    of the same daemon removes them before anything else, counted as leftovers."""
    b = backend(host, tmp_path)
    b.start()
    b.hold_address(DEAD, "eth0")
    b.hold_address(HA, None)
    b.state.release(remove=False)  # kill -9
    nl = host[1]
    assert (IPv6Interface(f"{DEAD}/128"), "eth0") in nl.addresses
    b2 = backend(host, tmp_path)
    b2.start()
    assert not any(i.ip in (DEAD, HA) for i, _ in nl.addresses)
    assert (N(f"{HA}/128"), None) not in nl.routes
    assert b2.counters["leftovers_removed"] == 3  # two addresses and one route


def test_null_backend_records_held_addresses():
    """The null backend keeps the intent: held addresses and where, in its snapshot."""
    b = NullBackend()
    b.hold_address(DEAD, "eth0")
    b.hold_address(HA, None)
    assert b.snapshot()["held"] == [[str(HA), None], [str(DEAD), "eth0"]]
    b.release_address(DEAD)
    assert b.held == {HA: None}
    with pytest.raises(TypeError):
        b.hold_address("2001:db8::1", None)


def test_the_adapter_carries_out_hold_address():
    """HomeAgentAdapter.duty maps HoldAddress onto hold_address/release_address with the
    home interface for on-link holds, None otherwise."""
    from haha.protocol import HomeAgentAdapter
    b = NullBackend()
    adapter = HomeAgentAdapter.__new__(HomeAgentAdapter)
    adapter.backend = b
    adapter.home_interface = "eth0"
    from collections import Counter
    adapter.counters = Counter()
    adapter.duty(HoldAddress(DEAD, True, True))
    adapter.duty(HoldAddress(HA, True, False))
    assert b.held == {DEAD: "eth0", HA: None}
    adapter.duty(HoldAddress(DEAD, False, True))
    assert b.held == {HA: None}
    assert adapter.counters["duty.HoldAddress"] == 3


def test_netlink_backend_holds_and_reclaims_the_same_way(host, tmp_path):
    """The netlink backend (the same LinkDuties) holds an address, and its next run after a
    crash removes it."""
    from haha.backends.netlink import NetlinkBackend
    system, nl = host
    nl.ip6tnl_error = None

    def make():
        b = NetlinkBackend(transport=_Sender(), netlink=nl, kernel_config=None)
        b.ownership = Ownership(PREFIX, "eth0", frozenset({HA}), str(tmp_path / "nl.state"))
        return b

    b = make()
    b.start()
    b.hold_address(DEAD, "eth0")
    assert (IPv6Interface(f"{DEAD}/128"), "eth0") in nl.addresses
    b.state.release(remove=False)  # kill -9
    again = make()
    again.start()
    assert (IPv6Interface(f"{DEAD}/128"), "eth0") not in nl.addresses
    assert again.counters["leftovers_removed"] == 1
