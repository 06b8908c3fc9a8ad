"""Peer discovery strategies: DNS (periodic AAAA lookups) and link (Router Advertisements)."""

from ipaddress import IPv6Address

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from haha.discovery.dns import DnsDiscovery
from haha.discovery.link import LinkDiscovery
from haha.discovery.static import StaticDiscovery
from haha.interfaces import IPeerDiscovery, IRouterAdvertisementListener
from haha.wire.icmpv6 import (
    PI_R,
    HomeAgentInformation,
    PrefixInformation,
    RouterAdvertisement,
)

A = IPv6Address


class Recorder:
    def __init__(self):
        self.events = []

    def peer_appeared(self, address, source):
        self.events.append(("+", str(address), source))

    def peer_disappeared(self, address, source):
        self.events.append(("-", str(address), source))


class FakeResolver:
    """Answers lookupIPV6Address from a dict; a name mapped to None fails."""

    def __init__(self, answers):
        self.answers = answers

    def lookupIPV6Address(self, name):  # noqa: N802 - twisted.names API
        addrs = self.answers[name]
        if addrs is None:
            return defer.fail(Failure(dns.DomainError(name)))
        rrs = [dns.RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(a)) for a in addrs]
        return defer.succeed((rrs, [], []))


def test_builtin_strategies_provide_interfaces():
    """static, dns and link provide IPeerDiscovery (link also listens to RAs)."""
    verifyObject(IPeerDiscovery, StaticDiscovery(()))
    verifyObject(IPeerDiscovery, DnsDiscovery(["x"], FakeResolver({"x": []}), Clock()))
    link = LinkDiscovery(Clock())
    verifyObject(IPeerDiscovery, link)
    verifyObject(IRouterAdvertisementListener, link)


def test_dns_reports_changes_and_survives_failures():
    """New AAAA records appear, removed ones disappear, a failed lookup keeps the last answer."""
    clock = Clock()
    answers = {"has.example": ["2001:db8::1", "2001:db8::2"]}
    d = DnsDiscovery(["has.example"], FakeResolver(answers), clock, interval=30)
    rec = Recorder()
    d.start(rec)
    assert rec.events == [("+", "2001:db8::1", "dns"), ("+", "2001:db8::2", "dns")]
    answers["has.example"] = None
    clock.advance(30)
    assert d.failures == 1 and d.current() == {A("2001:db8::1"), A("2001:db8::2")}
    answers["has.example"] = ["2001:db8::2", "2001:db8::3"]
    clock.advance(30)
    assert rec.events[2:] == [("+", "2001:db8::3", "dns"), ("-", "2001:db8::1", "dns")]
    assert d.lookups == 3
    d.stop()
    clock.advance(300)
    assert d.lookups == 3, "no lookups after stop"


def ra(address, lifetime, h=True):
    return RouterAdvertisement(
        flags=0x20 if h else 0,
        options=(HomeAgentInformation(10, lifetime), PrefixInformation(A(address), 64,
                                                                       0xC0 | PI_R)),
    )


def test_link_discovery_counters_reach_the_daemon():
    """The home agent's counters (haha-ctl counters, metrics) include link discovery's
    (``linkdiscovery.tracked`` ...): it declares ICounterSource, which the service checks."""
    from twisted.internet.testing import MemoryReactorClock

    from haha.config import home_agent_from_text
    from haha.io.memory import MemoryHub
    from haha.service import HomeAgentService

    reactor = MemoryReactorClock()
    config = home_agent_from_text(
        "[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
        "configuration = separate-links\n[security]\nmode = none\nlab = yes\n"
        "[transport]\nkind = udp\nudp-listen = 127.0.0.1:1\n")
    link = LinkDiscovery(reactor, own_addresses=[A("2001:db8:1::1")])
    service = HomeAgentService.build(config, reactor=reactor, discovery=link,
                                     transport=MemoryHub(reactor).endpoint(A("2001:db8:1::1")))
    service.startService()
    link.router_advertisement(A("fe80::2"), ra("2001:db8:1::2", 30))
    c = service.counters()
    assert c["linkdiscovery.tracked"] + c["linkdiscovery.unwanted"] == 1, c


def test_link_discovery_follows_home_agent_lifetime():
    """An RA with H and a PI R-address makes a peer for the HA lifetime; 0 withdraws it."""
    clock = Clock()
    link = LinkDiscovery(clock, own_addresses=[A("2001:db8:1::1")])
    rec = Recorder()
    link.start(rec)
    link.router_advertisement(A("fe80::2"), ra("2001:db8:1::2", 30))
    link.router_advertisement(A("fe80::1"), ra("2001:db8:1::1", 30))  # our own: ignored
    link.router_advertisement(A("fe80::3"), ra("2001:db8:1::3", 30, h=False))  # not an HA
    assert rec.events == [("+", "2001:db8:1::2", "link")]
    clock.advance(20)
    link.router_advertisement(A("fe80::2"), ra("2001:db8:1::2", 30))  # refresh, no new event
    clock.advance(20)
    assert link.peers() == {A("2001:db8:1::2")} and len(rec.events) == 1
    clock.advance(11)
    assert rec.events[-1] == ("-", "2001:db8:1::2", "link") and not link.peers()
    link.router_advertisement(A("fe80::2"), ra("2001:db8:1::2", 30))
    link.router_advertisement(A("fe80::2"), ra("2001:db8:1::2", 0))
    assert rec.events[-2:] == [("+", "2001:db8:1::2", "link"), ("-", "2001:db8:1::2", "link")]
    assert link.ignored == 2
