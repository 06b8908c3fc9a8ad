"""RawTransport's anycast memberships against the in-memory OS seam (FakeSystem): tier 2.

A home agent joins its home prefix's Home-Agents anycast address (RFC 6275 10.5, RFC 2526) so
that DHAAD requests reach it on a real link (docs/io.md, "DHAAD on real links"). The membership
lives on the transport's raw socket: it exists only while the transport runs.
"""

import errno
import sys
from ipaddress import IPv6Address, IPv6Network

import pytest
from twisted.internet.testing import MemoryReactor

from haha.core.homeagent import home_agents_anycast
from haha.io.raw import RawTransport
from haha.io.system import FakeSystem, _mreq
from haha.wire.icmpv6 import DhaadRequest, encode_icmpv6
from haha.wire.ipv6 import build_packet

ANYCAST = home_agents_anycast(IPv6Network("2001:db8:1::/64"))
COA = IPv6Address("2001:db8:20::11")
HA = IPv6Address("2001:db8:1::1")


def _transport(**kw):
    system = FakeSystem({"lo": 1, "eth0": 2, "eth1": 3})
    t = RawTransport(MemoryReactor(), system=system, table="haha_test_1", **kw)
    return t, system


def _request(dst=ANYCAST):
    return build_packet(COA, dst, 58, encode_icmpv6(DhaadRequest(7), COA, dst))


def test_anycast_address_is_the_rfc_2526_one():
    """The /64 Home-Agents anycast address has interface identifier FDFF:FFFF:FFFF:FFFE."""
    assert ANYCAST == IPv6Address("2001:db8:1::fdff:ffff:ffff:fffe")


def test_join_holds_the_membership_until_stop():
    """join_anycast joins through the raw socket; joining again is a no-op; stop closes the
    socket and with it the membership (as the kernel does, even when the process dies)."""
    t, system = _transport()
    t.start(lambda p: None)
    t.join_anycast(ANYCAST, "eth0")
    t.join_anycast(ANYCAST, "eth0")
    assert system.anycast() == {(ANYCAST, "eth0")}
    assert t.anycast == {(ANYCAST, "eth0")}
    assert t.counters["anycast_joined"] == 1
    t.stop()
    assert system.anycast() == set() and t.anycast == frozenset()


def test_leave_undoes_join():
    """leave_anycast leaves what was joined, and is a no-op for what was not."""
    t, system = _transport()
    t.start(lambda p: None)
    t.join_anycast(ANYCAST, "eth0")
    t.leave_anycast(ANYCAST, "eth0")
    t.leave_anycast(ANYCAST, "eth1")
    assert system.anycast() == set() and t.anycast == frozenset()
    assert not t.counters["anycast_errors"]


def test_kernel_refusals_raise_count_and_change_nothing():
    """EPERM (no CAP_NET_ADMIN), EINVAL (multicast), ENODEV (no such interface) and
    EADDRNOTAVAIL (a host interface outside the prefix) come back as the kernel's OSError,
    counted as anycast_errors; nothing is recorded."""
    t, system = _transport()
    t.start(lambda p: None)
    with pytest.raises(OSError) as e:
        t.join_anycast(IPv6Address("ff02::1"), "eth0")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        t.join_anycast(ANYCAST, "wlan9")
    assert e.value.errno == errno.ENODEV
    for code in (errno.EPERM, errno.EADDRNOTAVAIL):
        system.anycast_fail = code
        with pytest.raises(OSError) as e:
            t.join_anycast(ANYCAST, "eth0")
        assert e.value.errno == code
    assert t.counters["anycast_errors"] == 4
    assert system.anycast() == set() and t.anycast == frozenset()


def test_bad_arguments_and_not_started():
    """Before start there is no socket to hold a membership (RuntimeError); the address must be
    an IPv6Address and the interface a name (TypeError)."""
    t, system = _transport()
    with pytest.raises(RuntimeError):
        t.join_anycast(ANYCAST, "eth0")
    t.start(lambda p: None)
    with pytest.raises(TypeError):
        t.join_anycast(str(ANYCAST), "eth0")
    with pytest.raises(TypeError):
        t.join_anycast(ANYCAST, None)
    assert system.anycast() == set()


def test_address_filter_admits_the_joined_anycast_address():
    """A transport restricted to some destination addresses lets DHAAD requests to the joined
    anycast address through its BPF filter (and its nft set) until it leaves; stop restores
    the configured addresses."""
    t, system = _transport(addresses=[HA])
    t.start(lambda p: None)
    sock = system.packet_sockets[0]
    assert not sock.inject(_request())
    t.join_anycast(ANYCAST, "eth0")
    assert sock.inject(_request()) and sock.inject(_request(HA))
    assert str(ANYCAST) in system.nft_scripts[-1]
    t.leave_anycast(ANYCAST, "eth0")
    assert not sock.inject(_request())
    t.join_anycast(ANYCAST, "eth0")
    t.stop()
    t.start(lambda p: None)
    assert not system.packet_sockets[-1].inject(_request())


def test_ipv6_mreq_layout():
    """struct ipv6_mreq: the 16-octet address, then the interface index as a C int."""
    data = _mreq(ANYCAST, 2)
    assert data[:16] == ANYCAST.packed and int.from_bytes(data[16:], sys.byteorder) == 2
    assert len(data) == 20
