"""The tun backend and the mobile node's tunnel against the fakes (tier 2, no root):
lookup, RFC 2473 encapsulation, the no-open-relay checks, proxy ND and prefixes."""

from collections import Counter
from ipaddress import IPv6Address, IPv6Network

import pytest
from twisted.internet.testing import MemoryReactor
from zope.interface.verify import verifyObject

from haha.backends.netsys import RTPROT_HAHA, FakeNetlink, NetlinkFailure
from haha.backends.tun import MobileTunnel, TunBackend
from haha.core.duties import ForwardingRoute
from haha.interfaces import IForwardingBackend
from haha.io.system import FakeSystem
from haha.wire.icmpv6 import NA_O, NeighborAdvertisement, decode_icmpv6
from haha.wire.ipv6 import build_packet, parse_packet

HA = IPv6Address("2001:db8:1::1")
HOME = IPv6Address("2001:db8:1::100")
HOME2 = IPv6Address("2001:db8:1::200")
COA = IPv6Address("2001:db8:20::5")
COA2 = IPv6Address("2001:db8:20::6")
CN = IPv6Address("2001:db8:30::10")
MNP = IPv6Network("2001:db8:99::/48")
MNP_MORE = IPv6Network("2001:db8:99:5::/64")
LL = IPv6Address("fe80::1")
MAC = b"\x02\xaa\xbb\xcc\xdd\xee"


class _Sender:
    def __init__(self):
        self.sent = []
        self.counters = Counter()

    def send(self, packet, interface=None):
        self.sent.append((packet, interface))


def _backend(**kw):
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, HA]}}, system=system)
    tx = _Sender()
    b = TunBackend(MemoryReactor(), tx, tun_name="hahat%d", netlink=nl, system=system, **kw)
    b.start()
    return b, nl, tx


def test_provides_the_backend_interface():
    """TunBackend provides IForwardingBackend and says it works in user space."""
    b = TunBackend(MemoryReactor(), _Sender(), netlink=FakeNetlink(), system=FakeSystem())
    assert verifyObject(IForwardingBackend, b)
    assert "userspace" in b.capabilities() and "tunnel" in b.capabilities()


def test_start_brings_the_tun_up_and_stop_restores():
    """start() opens the TUN, sets it up with the tunnel MTU (1460) and enables forwarding;
    stop() removes routes, proxy entries and prefixes, restores sysctls, closes the TUN."""
    b, nl, _ = _backend()
    name = b.tun.name
    assert nl.links[name]["up"] and nl.links[name]["mtu"] == 1460
    assert nl.sysctls["net.ipv6.conf.all.forwarding"] == "1"
    b.install(ForwardingRoute(HOME, COA, HA, (MNP,)))
    b.proxy_nd_start(HOME, "eth0")
    b.advertise_prefix(IPv6Network("2001:db8:1::/64"))
    f = b.tun.file
    b.stop()
    assert nl.routes == {} and nl.proxies == set() and f.closed
    assert nl.sysctls["net.ipv6.conf.all.forwarding"] == "0"
    assert nl.sysctls["net.ipv6.conf.eth0.proxy_ndp"] == "0"


def test_install_refresh_remove_keep_kernel_routes_in_step():
    """install routes the home address and prefixes into the TUN; a refresh with other prefixes
    adds and removes exactly the difference; remove takes them all away; unknown removes are
    ignored."""
    b, nl, _ = _backend()
    dev = b.tun.name
    b.install(ForwardingRoute(HOME, COA, HA, (MNP,)))
    assert set(nl.routes) == {(IPv6Network(HOME), None), (MNP, None)}
    assert all(v["dev"] == dev for v in nl.routes.values())
    b.install(ForwardingRoute(HOME, COA2, HA, (MNP_MORE,)))
    assert set(nl.routes) == {(IPv6Network(HOME), None), (MNP_MORE, None)}
    b.remove(HOME)
    b.remove(HOME)
    assert nl.routes == {}
    assert b.snapshot()["routes"] == []


def test_lookup_exact_then_longest_prefix():
    """A destination matches its home address exactly, else the longest mobile network
    prefix."""
    b, _, _ = _backend()
    b.install(ForwardingRoute(HOME, COA, HA, (MNP,)))
    b.install(ForwardingRoute(HOME2, COA2, HA, (MNP_MORE,)))
    assert b.lookup(HOME).care_of == COA
    assert b.lookup(IPv6Address("2001:db8:99:1::1")).care_of == COA
    assert b.lookup(IPv6Address("2001:db8:99:5::1")).care_of == COA2
    assert b.lookup(CN) is None


def test_packets_from_the_tun_are_encapsulated_rfc2473():
    """A packet for a home address read from the TUN leaves as IPv6-in-IPv6 from the route's
    local address to the care-of address with the tunnel hop limit; the inner packet is
    unchanged; packets without a route, malformed ones and hop limit 0 are counted drops."""
    b, _, tx = _backend(hop_limit=60)
    b.install(ForwardingRoute(HOME, COA, HA))
    inner = build_packet(CN, HOME, 58, bytes(8), hop_limit=63)
    b.tun.file.inject(inner)
    b.tun.file.inject(build_packet(CN, HOME2, 58, bytes(8)))
    b.tun.file.inject(b"\x45" + bytes(40))
    b.tun.file.inject(build_packet(CN, HOME, 58, bytes(8), hop_limit=0))
    b.tun.doRead()
    assert len(tx.sent) == 1
    outer = parse_packet(tx.sent[0][0])
    assert (outer.src, outer.dst, outer.next_header, outer.hop_limit) == (HA, COA, 41, 60)
    assert outer.payload == inner
    assert b.counters["tun_no_route"] == 1 and b.counters["tun_malformed"] == 1
    assert b.counters["hop_limit_exceeded"] == 1


def test_decapsulation_is_no_open_relay():
    """Only IPv6-in-IPv6 from a registered care-of address to the route's local address, with
    an inner source the binding owns, is written to the TUN; every other case is a counted
    drop."""
    b, _, _ = _backend()
    b.install(ForwardingRoute(HOME, COA, HA, (MNP,)))
    ok = build_packet(HOME, CN, 58, bytes(8))
    from_mnp = build_packet(IPv6Address("2001:db8:99::7"), CN, 58, bytes(8))
    spoofed = build_packet(IPv6Address("2001:db8:77::1"), CN, 58, bytes(8))
    assert b.decapsulate(build_packet(COA, HA, 41, ok))
    assert b.decapsulate(build_packet(COA, HA, 41, from_mnp))
    assert b.tun.file.written == [ok, from_mnp]
    assert not b.decapsulate(build_packet(COA, HA, 41, spoofed))
    assert not b.decapsulate(build_packet(COA2, HA, 41, ok))
    assert not b.decapsulate(build_packet(COA, IPv6Address("2001:db8:1::2"), 41, ok))
    assert not b.decapsulate(build_packet(COA, HA, 135, bytes(16)))
    assert not b.decapsulate(build_packet(COA, HA, 41, b"\x60" + bytes(5)))
    assert not b.decapsulate(b"garbage")
    c = b.counters
    assert (c["decap_spoofed_source"], c["decap_unknown_care_of"], c["decap_wrong_local"],
            c["decap_not_tunnel"], c["decap_malformed"]) == (1, 1, 1, 1, 2)
    assert c["decapsulated"] == 2


def test_proxy_nd_enables_kernel_proxy_and_sends_unsolicited_na():
    """proxy_nd_start sets proxy_ndp on the interface, adds the proxy entry and sends one
    unsolicited NA to all-nodes from our link-local address with hop limit 255, target the
    home address, O set, S and R clear, our link-layer address; proxy_nd_stop removes the
    entry."""
    b, nl, tx = _backend()
    b.proxy_nd_start(HOME, "eth0")
    assert nl.sysctls["net.ipv6.conf.eth0.proxy_ndp"] == "1"
    assert (HOME, "eth0") in nl.proxies
    packet, interface = tx.sent[-1]
    assert interface == "eth0"
    p = parse_packet(packet)
    assert (p.src, p.dst, p.hop_limit, p.next_header) == (LL, IPv6Address("ff02::1"), 255, 58)
    na = decode_icmpv6(p.payload, p.src, p.dst)
    assert isinstance(na, NeighborAdvertisement) and na.target == HOME and na.flags == NA_O
    assert na.options[0].address == MAC
    b.proxy_nd_stop(HOME, "eth0")
    b.proxy_nd_stop(HOME, "eth0")
    assert nl.proxies == set()
    with pytest.raises(TypeError):
        b.proxy_nd_start("2001:db8::1", "eth0")


def test_prefix_advertisement_is_an_unreachable_haha_route():
    """advertise_prefix installs an unreachable route (haha's protocol number 72, metric 1024)
    once; withdraw removes it."""
    b, nl, _ = _backend()
    prefix = IPv6Network("2001:db8:1::/64")
    b.advertise_prefix(prefix)
    b.advertise_prefix(prefix)
    assert nl.routes[(prefix, None)] == {"dev": None, "metric": 1024, "kind": "unreachable",
                                         "proto": 72}
    b.withdraw_prefix(prefix)
    b.withdraw_prefix(prefix)
    assert nl.routes == {}
    with pytest.raises(TypeError):
        b.advertise_prefix("2001:db8:1::/64")


def test_netlink_failures_are_counted_not_raised():
    """A kernel refusal while installing is logged and counted; the user-space table still
    holds the route so decapsulation keeps working."""
    b, nl, _ = _backend()

    def refuse(*a, **k):
        raise NetlinkFailure("route replace: (13, 'Permission denied')", 13)

    nl.route_replace = refuse
    b.install(ForwardingRoute(HOME, COA, HA))
    assert b.counters["netlink_errors"] == 1 and HOME in b.routes
    with pytest.raises(ValueError):
        TunBackend(MemoryReactor(), _Sender(), hop_limit=0, netlink=nl, system=FakeSystem())
    with pytest.raises(ValueError):
        TunBackend(MemoryReactor(), _Sender(), mtu=1000, netlink=nl, system=FakeSystem())


def _tunnel():
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {}}, system=system)
    tx = _Sender()
    t = MobileTunnel(MemoryReactor(), tx, netlink=nl, system=system)
    t.start()
    return t, nl, tx


def test_mobile_tunnel_routes_home_address_traffic_into_the_tunnel():
    """set_endpoint puts the home address on the TUN, a rule from it (and from each prefix) to
    the tunnel table whose default route is the TUN; moving to a new care-of changes only the
    outer addresses; clear removes everything."""
    t, nl, _ = _tunnel()
    t.set_endpoint(HOME, COA, HA, (MNP,))
    dev = t.tun.name
    assert (IPv6Network(f"{HOME}/128"), t.table, 1000) in nl.rules
    assert (MNP, t.table, 1000) in nl.rules
    assert nl.routes[(IPv6Network("::/0"), t.table)]["dev"] == dev
    assert HOME in nl.links[dev]["addresses"]
    t.set_endpoint(HOME, COA2, HA, (MNP,))
    assert len(nl.rules) == 2 and t.care_of == COA2
    t.clear()
    t.clear()
    assert nl.rules == set() and nl.routes == {} and HOME not in nl.links[dev]["addresses"]
    with pytest.raises(TypeError):
        t.set_endpoint("2001:db8::1", COA, HA)


def test_mobile_tunnel_steers_unmarked_traffic_while_away_and_reclaims_leftovers():
    """With a steering mark, the tunnel's coming up adds the two steering rules (main without
    its default route at 1001, everything not marked into the tunnel table at 1002, tagged
    with haha's protocol); they stay through a move and go with clear(). A new run finds the
    rules a killed one left in its own table and removes them, leaving other tables' alone."""
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {}}, system=system)
    t = MobileTunnel(MemoryReactor(), _Sender(), netlink=nl, system=system, steer_mark=77)
    t.start()
    assert nl.steering == {}
    t.set_endpoint(HOME, COA, HA)
    assert nl.steering == {(t.table, 1001, 77): RTPROT_HAHA}
    t.set_endpoint(HOME, COA2, HA)
    assert nl.log.count(("steer_add", t.table, 1001, 77)) == 1
    t.clear()
    assert nl.steering == {}
    nl.steer_add(t.table, 1001, 77, proto=RTPROT_HAHA)  # a killed run's
    nl.steer_add(500, 1001, 78, proto=RTPROT_HAHA)  # another node's table
    again = MobileTunnel(MemoryReactor(), _Sender(), netlink=nl, system=system, steer_mark=77)
    again.start()
    assert nl.steering == {(500, 1001, 78): RTPROT_HAHA}
    plain, nl2, _ = _tunnel()
    plain.set_endpoint(HOME, COA, HA)
    assert nl2.steering == {}


def test_mobile_tunnel_encapsulates_and_decapsulates():
    """Packets from the home address (or a prefix) read from the TUN go to the HA from the
    care-of address; others are dropped; only the HA's tunnelled packets to our home address or
    prefixes are written to the TUN."""
    t, _, tx = _tunnel()
    t.tun.file.inject(build_packet(HOME, CN, 58, bytes(8)))
    t.tun.doRead()
    assert t.counters["tun_no_endpoint"] == 1
    t.set_endpoint(HOME, COA, HA, (MNP,))
    out = build_packet(HOME, CN, 58, bytes(8))
    t.tun.file.inject(out)
    t.tun.file.inject(build_packet(IPv6Address("2001:db8:99::3"), CN, 58, bytes(8)))
    t.tun.file.inject(build_packet(COA, CN, 58, bytes(8)))
    t.tun.doRead()
    assert len(tx.sent) == 2 and t.counters["tun_foreign_source"] == 1
    outer = parse_packet(tx.sent[0][0])
    assert (outer.src, outer.dst, outer.payload) == (COA, HA, out)
    back = build_packet(CN, HOME, 58, bytes(8))
    assert t.decapsulate(build_packet(HA, COA, 41, back))
    assert t.tun.file.written == [back]
    assert not t.decapsulate(build_packet(CN, COA, 41, back))
    assert not t.decapsulate(build_packet(HA, COA, 41, build_packet(CN, CN, 59, b"")))
    assert t.counters["decap_unknown_peer"] == 1 and t.counters["decap_wrong_destination"] == 1
    with pytest.raises(ValueError):
        MobileTunnel(MemoryReactor(), tx, table=254, netlink=FakeNetlink(), system=FakeSystem())


def test_mobile_tunnel_accepts_its_other_home_agents():
    """Without a home link every home agent forwards from its copies (draft 3.2): the node's
    tunnel decapsulates packets from any home agent of its list, still only to its care-of
    address and home address, and still sends its own packets to the registered one only."""
    t, _, tx = _tunnel()
    other, stranger = IPv6Address("2001:db8:1::2"), IPv6Address("2001:db8:1::9")
    t.set_endpoint(HOME, COA, HA, home_agents=(HA, other))
    back = build_packet(CN, HOME, 58, bytes(8))
    assert t.decapsulate(build_packet(other, COA, 41, back))
    assert not t.decapsulate(build_packet(stranger, COA, 41, back))
    assert not t.decapsulate(build_packet(other, COA2, 41, back))
    assert t.counters["decap_unknown_peer"] == 2 and t.tun.file.written == [back]
    t.tun.file.inject(build_packet(HOME, CN, 58, bytes(8)))
    t.tun.doRead()
    assert parse_packet(tx.sent[-1][0]).dst == HA
    t.clear()
    assert t.home_agents == frozenset()
    with pytest.raises(TypeError):
        t.set_endpoint(HOME, COA, HA, home_agents=("2001:db8:1::2",))


def test_plugin_factory_reads_its_section_and_touches_nothing():
    """build(context) turns [backend:tun] into a TunBackend without opening anything; built
    without a transport, start() refuses to run, saying how to give it one; the same keys
    configure a mobile node's MobileTunnel."""
    from twisted.internet.task import Clock

    from haha.backends.context import BackendContext
    from haha.backends.tun import build, options_of
    from haha.inifile import ConfigError, parse_ini

    text = "[backend:tun]\ndevice = ha%d\nmtu = 1400\nhop-limit = 32\ntable = 100\n" \
           "forwarding = no\nrouter-flag = yes\n"
    section = parse_ini(text)["backend:tun"]
    b = build(BackendContext(section, Clock()))
    assert (b.tun.requested_name, b.mtu, b.hop_limit, b.table) == ("ha%d", 1400, 32, 100)
    assert b.enable_forwarding is False and b.router_flag is True and b.transport is None
    assert section.unused() == []
    with pytest.raises(RuntimeError, match="no transport.*BackendContext"):
        b.start()
    t = MobileTunnel(MemoryReactor(), _Sender(), netlink=FakeNetlink(), system=FakeSystem(),
                     **options_of(parse_ini("[backend:tun]\n")["backend:tun"]))
    assert t.table == 0x4D4E and t.mtu == 1460
    with pytest.raises(ConfigError):
        build(BackendContext(parse_ini("[backend:tun]\nmtu = 500\n")["backend:tun"], Clock()))


def test_plugin_factory_builds_a_complete_backend_from_the_context(tmp_path):
    """Everything the daemon gives a backend arrives through the context, in one step: the
    transport (the unsolicited NA goes through it), the ownership (the state file is taken
    at start), the logger (its start is logged there) and the OS seams (the TUN is opened on
    the context's system, the routes made through its netlink); nothing is set on the
    backend afterwards."""
    from twisted.internet.task import Clock
    from twisted.logger import Logger

    from haha.backends.common import Ownership
    from haha.backends.context import BackendContext
    from haha.backends.tun import build
    from haha.inifile import parse_ini
    from haha.io.memory import MemoryHub

    system = FakeSystem()
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, HA]}}, system=system)
    transport = MemoryHub(Clock()).endpoint(HA)
    own = Ownership(IPv6Network("2001:db8:1::/64"), "eth0", frozenset({HA}),
                    str(tmp_path / "ha.state"))
    events = []
    b = build(BackendContext(parse_ini("[backend:tun]\nforwarding = no\n")["backend:tun"],
                             MemoryReactor(), transport=transport, ownership=own, netlink=nl,
                             system=system, log=Logger(namespace="ha1", observer=events.append)))
    assert b.transport is transport and b.ownership is own
    b.start()
    assert any("tun backend started" in e.get("log_format", "") for e in events)
    assert list(system.tuns) == [b.tun.name] and (tmp_path / "ha.state").exists()
    b.install(ForwardingRoute(HOME, COA, HA))
    assert (IPv6Network(HOME), None) in nl.routes
    b.stop()


def test_fast_paths_forget_a_removed_or_moved_binding():
    """The per-packet caches (destination -> tunnel addresses, tunnels accepted once) never
    outlive the binding: after the care-of address moves, packets go to the new one and the
    old care-of address's tunnel is refused; after remove() nothing is accepted or sent."""
    b, _, tx = _backend()
    b.install(ForwardingRoute(HOME, COA, HA))
    inner = build_packet(CN, HOME, 58, bytes(8))
    back = build_packet(HOME, CN, 58, bytes(8))
    for _ in range(2):  # the second time through the caches
        b.tun.file.inject(inner)
        b.tun.doRead()
        assert b.decapsulate(build_packet(COA, HA, 41, back))
    assert [parse_packet(p).dst for p, _ in tx.sent] == [COA, COA]
    b.install(ForwardingRoute(HOME, COA2, HA))
    b.tun.file.inject(inner)
    b.tun.doRead()
    assert parse_packet(tx.sent[-1][0]).dst == COA2
    assert not b.decapsulate(build_packet(COA, HA, 41, back))
    assert b.decapsulate(build_packet(COA2, HA, 41, back))
    b.remove(HOME)
    b.tun.file.inject(inner)
    b.tun.doRead()
    assert len(tx.sent) == 3 and b.counters["tun_no_route"] == 1
    assert not b.decapsulate(build_packet(COA2, HA, 41, back))
    assert b.counters["decap_unknown_care_of"] == 2
    assert b.counters["decapsulated"] == 3


def test_fast_path_writes_the_inner_packet_without_padding():
    """The fast path writes exactly the inner packet (its Payload Length), not octets after it
    (Ethernet padding), and the same as the slow path."""
    b, _, _ = _backend()
    b.install(ForwardingRoute(HOME, COA, HA))
    back = build_packet(HOME, CN, 58, bytes(8))
    tunnelled = build_packet(COA, HA, 41, back)
    assert b.decapsulate(tunnelled) and b.decapsulate(tunnelled + bytes(6))
    assert b.tun.file.written == [back, back]


def test_mobile_tunnel_fast_paths_follow_the_endpoint():
    """After set_endpoint names another home agent or care-of address, or clear(), the node's
    cached tunnel is not used any more: packets go to the new home agent, the old tunnel's
    packets are refused."""
    t, _, tx = _tunnel()
    other = IPv6Address("2001:db8:1::2")
    t.set_endpoint(HOME, COA, HA)
    back = build_packet(CN, HOME, 58, bytes(8))
    out = build_packet(HOME, CN, 58, bytes(8))
    for _ in range(2):
        assert t.decapsulate(build_packet(HA, COA, 41, back))
        t.tun.file.inject(out)
        t.tun.doRead()
    t.set_endpoint(HOME, COA2, other)
    assert not t.decapsulate(build_packet(HA, COA, 41, back))
    t.tun.file.inject(out)
    t.tun.doRead()
    assert [(parse_packet(p).src, parse_packet(p).dst) for p, _ in tx.sent] == [
        (COA, HA), (COA, HA), (COA2, other)]
    t.clear()
    assert not t.decapsulate(build_packet(other, COA2, 41, back))
    t.tun.file.inject(out)
    t.tun.doRead()
    assert len(tx.sent) == 3 and t.counters["tun_no_endpoint"] == 1


def test_backends_take_tunnelled_packets_from_the_transport_while_running():
    """A started backend or mobile tunnel asks its transport to hand IPv6-in-IPv6 straight to
    its decapsulate, and takes it back at stop."""
    from zope.interface import implementer

    from haha.interfaces import ITunnelFastPath

    @implementer(ITunnelFastPath)
    class _Hooked(_Sender):
        tunnel = "unset"

        def set_tunnel_receiver(self, receiver):
            self.tunnel = receiver

        def send_encapsulated(self, header, payload):
            self.send(header + bytes(payload))

    system = FakeSystem()
    tx = _Hooked()
    b = TunBackend(MemoryReactor(), tx, tun_name="hahat%d", system=system,
                   netlink=FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, HA]}},
                                       system=system))
    b.start()
    assert tx.tunnel == b.decapsulate
    b.stop()
    assert tx.tunnel is None
    tx2 = _Hooked()
    system2 = FakeSystem()
    t = MobileTunnel(MemoryReactor(), tx2, netlink=FakeNetlink({"eth0": {}}, system=system2),
                     system=system2)
    t.start()
    assert tx2.tunnel == t.decapsulate
    t.stop()
    assert tx2.tunnel is None


def test_fast_paths_skip_the_parser_after_the_first_packet(monkeypatch):
    """Once a tunnel's addresses were accepted by the full checks, its next packets (both
    ends) are decapsulated without parsing, and packets from the TUN are encapsulated without
    a route lookup: the parser and the lookup run once per tunnel, not per packet."""
    import haha.backends.tun as tun_module
    calls = Counter()
    real_parse = tun_module.parse_packet

    def parse(data):
        calls["parse"] += 1
        return real_parse(data)

    monkeypatch.setattr(tun_module, "parse_packet", parse)
    b, _, tx = _backend()
    b.install(ForwardingRoute(HOME, COA, HA))
    real_lookup = b.lookup
    b.lookup = lambda d: calls.update(["lookup"]) or real_lookup(d)
    t, _, ttx = _tunnel()
    t.set_endpoint(HOME, COA, HA)
    back = build_packet(HOME, CN, 58, bytes(8))
    inner = build_packet(CN, HOME, 58, bytes(8))
    for _ in range(5):
        assert b.decapsulate(build_packet(COA, HA, 41, back))
        assert t.decapsulate(build_packet(HA, COA, 41, inner))
        b.tun.file.inject(inner)
        b.tun.doRead()
        t.tun.file.inject(back)
        t.tun.doRead()
    assert calls == {"parse": 2, "lookup": 1}
    assert b.tun.file.written == [back] * 5 and t.tun.file.written == [inner] * 5
    assert len(tx.sent) == 5 and len(ttx.sent) == 5
