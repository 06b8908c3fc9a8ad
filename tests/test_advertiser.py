"""Home agents on one home link: Router Advertisements for mobile nodes, HELLO between them."""

from ipaddress import IPv6Address

from twisted.internet.task import Clock

from haha.advertiser import link_local_address
from haha.backends.null import NullBackend
from haha.config import home_agent_from_text
from haha.discovery.static import StaticDiscovery
from haha.io.memory import MemoryHub
from haha.service import HomeAgentService
from haha.wire.icmpv6 import RouterAdvertisement, decode_icmpv6
from haha.wire.ipv6 import build_packet, parse_packet

A = IPv6Address

TEXT = """\
[home-agent]
address = 2001:db8:1::{i}
home-prefix = 2001:db8:1::/64
configuration = home-link
home-interface = eth0
preference = {pref}
lifetime = 6
hello-interval = 2
boot-wait = 0
drain-on-stop = no
[peers]
static = 2001:db8:1::{j}
[security]
mode = none
lab = yes
"""


def pair():
    clock = Clock()
    hub = MemoryHub(clock)
    services = []
    for i, j in ((1, 2), (2, 1)):
        config = home_agent_from_text(TEXT.format(i=i, j=j, pref=10 * i), f"ha{i}.conf")
        end = hub.endpoint(A(f"2001:db8:1::{i}"), A(f"fe80::{i}"), name=f"ha{i}")
        s = HomeAgentService.build(config, clock, backend=NullBackend(), transport=end,
                                   discovery=StaticDiscovery(config.peers))
        s.advertiser.source = A(f"fe80::{i}")
        services.append(s)
    return clock, hub, services


def test_shared_link_home_agents_advertise_and_live_by_hello():
    """On a shared home link each HA sends Router Advertisements (H flag, hop limit 255, to
    ff02::1, for mobile nodes) and HELLOs: peers are live by HELLO only (docs/security.md,
    "Peer liveness"); the goodbye HELLO of a stopping HA removes it at once."""
    clock, hub, (ha1, ha2) = pair()
    for s in (ha1, ha2):
        s.startService()
    clock.advance(2.1)
    assert ha1.peers() == [{"address": "2001:db8:1::2", "preference": 20, "prefixes": []}]
    assert ha2.peers() == [{"address": "2001:db8:1::1", "preference": 10, "prefixes": []}]
    assert ha1.counters()["sent.HaHello"] >= 2 and ha1.counters()["received.HaHello"] >= 1
    ras = [q for q in (parse_packet(p) for _, p, _ in hub.log) if q.next_header == 58]
    assert ras and all(p.hop_limit == 255 and str(p.dst) == "ff02::1" for p in ras)
    ra = decode_icmpv6(ras[0].payload, ras[0].src, ras[0].dst)
    assert isinstance(ra, RouterAdvertisement) and ra.router_lifetime == 0
    assert ha1.counters()["core.ignored:ra-not-liveness"] >= 1
    clock.advance(30)  # periodic HELLOs keep the peers alive well past the 6 s lifetime
    assert len(ha1.peers()) == 1
    ha2.stopService()
    clock.advance(0.1)
    assert ha1.peers() == []


def test_forwarded_router_advertisement_is_dropped():
    """An RA with hop limit below 255 (it crossed a router) is dropped, not learnt from."""
    clock, hub, (ha1, ha2) = pair()
    ha1.startService()
    good = ha1.advertiser.advertisement()
    from haha.wire.icmpv6 import encode_icmpv6
    data = encode_icmpv6(good, A("fe80::9"), A("ff02::1"))
    rogue = hub.endpoint(A("fe80::9"), name="rogue")
    rogue.start(lambda p: None)
    rogue.send(build_packet(A("fe80::9"), A("ff02::1"), 58, data, hop_limit=64))
    clock.advance(0.1)
    assert ha1.counters()["dropped.bad-router-advertisement"] == 1


def test_link_local_address_from_the_kernel_table(tmp_path):
    """The source address comes from /proc/net/if_inet6's link-scope entry of the interface."""
    table = tmp_path / "if_inet6"
    table.write_text(
        "20010db8000000000000000000000001 02 40 00 80     eth0\n"
        "fe800000000000000000000000000001 02 40 20 80     eth0\n"
        "fe800000000000000000000000000002 03 40 20 80     eth1\n")
    assert link_local_address("eth1", str(table)) == A("fe80::2")
    assert link_local_address("eth0", str(table)) == A("fe80::1")
    assert link_local_address("eth9", str(table)) is None
