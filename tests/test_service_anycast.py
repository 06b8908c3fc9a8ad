"""The home agent service joins its Home-Agents anycast address (RFC 6275 10.5) at start.

A raw transport over the in-memory OS seam (FakeSystem) stands in for the kernel: with a home
link the membership is on the home interface (the kernel answers Neighbour Solicitations for it
there), without one on ``lo`` (the address comes by routing; the kernel only has to take it as
local). A refusal fails the start with a sentence saying what to fix and leaves nothing behind.
"""

import errno
from ipaddress import IPv6Address

import pytest
from twisted.internet.testing import MemoryReactorClock

from haha.backends.null import NullBackend
from haha.config import home_agent_from_text
from haha.discovery.static import StaticDiscovery
from haha.io.memory import MemoryHub
from haha.io.raw import RawTransport
from haha.io.system import FakeSystem
from haha.service import HomeAgentService, anycast_membership
from haha.wire.icmpv6 import DhaadReply, DhaadRequest, decode_icmpv6, encode_icmpv6
from haha.wire.ipv6 import build_packet, parse_packet

A = IPv6Address
ANYCAST = A("2001:db8:1::fdff:ffff:ffff:fffe")
COA = A("2001:db8:20::11")

TEXT = """\
[home-agent]
address = {address}
home-prefix = 2001:db8:1::/64
configuration = {kind}
{home}
preference = 10
boot-wait = 0
drain-on-stop = no
router-advertisements = no
[peers]
static = 2001:db8:2::9
[security]
mode = none
lab = yes
[transport]
kind = raw
interfaces = eth0
"""


def config(kind="home-link"):
    home = "" if kind == "no-home-link" else "home-interface = eth0"
    address = "2001:db8:2::1" if kind == "no-home-link" else "2001:db8:1::1"
    return home_agent_from_text(TEXT.format(kind=kind, home=home, address=address), "ha.conf")


def service(cfg, system):
    reactor = MemoryReactorClock()
    transport = RawTransport(reactor, interfaces=["eth0"], system=system,
                             default_interface=cfg.home_interface)
    return HomeAgentService.build(cfg, reactor, backend=NullBackend(), transport=transport,
                                  discovery=StaticDiscovery(cfg.peers))


@pytest.mark.parametrize("kind, interface", [("home-link", "eth0"),
                                             ("separate-links", "eth0"),
                                             ("no-home-link", "lo")])
def test_membership_follows_the_configuration(kind, interface):
    """Home link: the home interface; no home link: lo. Joined at start, shown in status, gone
    at stop (the transport's socket held it)."""
    cfg = config(kind)
    assert anycast_membership(cfg) == (ANYCAST, interface)
    system = FakeSystem()
    s = service(cfg, system)
    s.startService()
    assert system.anycast() == {(ANYCAST, interface)}
    assert s.status()["anycast"] == [str(ANYCAST), interface]
    s.stopService()
    assert system.anycast() == set() and s.status()["anycast"] is None


def test_refusal_fails_the_start_clearly_and_leaves_nothing():
    """EADDRNOTAVAIL (no forwarding, no address in the prefix) stops the start with a sentence
    naming the address, the interface and the fix; sockets and the nft table are gone."""
    system = FakeSystem()
    system.anycast_fail = errno.EADDRNOTAVAIL
    s = service(config(), system)
    with pytest.raises(OSError) as e:
        s.startService()
    text = str(e.value)
    assert e.value.errno == errno.EADDRNOTAVAIL
    assert f"cannot join the Home-Agents anycast address {ANYCAST}" in text
    assert "on eth0" in text and "forwarding" in text and "2001:db8:1::/64" in text
    assert system.nft_tables == set()
    assert all(sock.closed for sock in system.packet_sockets + system.raw_sockets)


def test_the_joined_address_gets_dhaad_answers():
    """A DHAAD request to the anycast address arriving on the raw transport is answered from
    the home agent address to the care-of address, through the raw socket."""
    system = FakeSystem()
    s = service(config(), system)
    s.startService()
    request = build_packet(COA, ANYCAST, 58, encode_icmpv6(DhaadRequest(9), COA, ANYCAST))
    system.packet_sockets[0].inject(request)
    for reader in list(s.reactor.readers):
        reader.doRead()
    sent = [parse_packet(p) for p, _ in system.raw_sockets[0].sent]
    replies = [p for p in sent if p.next_header == 58 and p.dst == COA]
    (reply,) = replies
    message = decode_icmpv6(reply.payload, reply.src, reply.dst)
    assert isinstance(message, DhaadReply) and message.identifier == 9
    assert reply.src == A("2001:db8:1::1") and message.addresses == (A("2001:db8:1::1"),)
    s.stopService()


def test_a_transport_without_anycast_support_is_left_alone():
    """The in-memory and UDP transports have no join_anycast: nothing is joined, nothing
    fails."""
    reactor = MemoryReactorClock()
    cfg = config()
    end = MemoryHub(reactor).endpoint(A("2001:db8:1::1"))
    s = HomeAgentService.build(cfg, reactor, backend=NullBackend(), transport=end,
                               discovery=StaticDiscovery(cfg.peers))
    s.startService()
    assert s.status()["anycast"] is None
    s.stopService()
