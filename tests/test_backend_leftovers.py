"""What a crashed run leaves in the kernel, and how the next run of the same daemon reclaims it
(tier 2, the netlink fake): every route, rule and proxy entry is tagged with haha's protocol
number; a backend given an Ownership removes, at start, the tagged leftovers inside its scope
and nothing else; the state file refuses a second start of the same daemon, remembers the
previous scope and the original sysctl values, and goes at a clean stop."""

import json
import os
from ipaddress import IPv6Address, IPv6Network

import pytest
from twisted.internet.testing import MemoryReactor
from twisted.logger import formatEvent, globalLogPublisher

from haha.backends.common import Ownership, StateBusy, StateFile
from haha.backends.netlink import NetlinkBackend
from haha.backends.netsys import RTPROT_HAHA, RTPROT_STATIC, FakeNetlink
from haha.backends.tun import MobileTunnel, TunBackend
from haha.core.duties import ForwardingRoute
from haha.io.system import FakeSystem
from haha.wire.icmpv6 import NA_O, NA_R, NeighborAdvertisement, decode_icmpv6
from haha.wire.ipv6 import parse_packet

A = IPv6Address
N = IPv6Network
HA = A("2001:db8:1::1")
HOME = A("2001:db8:1::100")
HOME2 = A("2001:db8:1::101")
OTHER = A("2001:db8:1::77")
COA = A("2001:db8:20::5")
PREFIX = N("2001:db8:1::/64")
PREFIX2 = N("2001:db8:2::/64")
MNP = N("2001:db8:99::/48")
LL = A("fe80::1")
MAC = b"\x02\xaa\xbb\xcc\xdd\xee"


class _Sender:
    def __init__(self):
        self.sent = []

    def send(self, packet, interface=None):
        self.sent.append((packet, interface))


class Host:
    """One machine's kernel (a netlink fake and a system fake) that several backends, one
    after the other, run on."""

    def __init__(self):
        self.system = FakeSystem()
        self.nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, HA]},
                               "eth1": {"addresses": [A("fe80::2")]}}, system=self.system)

    def tun_backend(self, ownership=None, **kw):
        b = TunBackend(MemoryReactor(), _Sender(), tun_name="hahat%d", netlink=self.nl,
                       system=self.system, **kw)
        b.ownership = ownership
        return b


@pytest.fixture
def host():
    return Host()


@pytest.fixture
def logs():
    seen = []

    def observe(event):
        seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def _own(tmp_path, prefix=PREFIX, interface="eth0", state=True):
    return Ownership(prefix, interface, frozenset({HA}),
                     str(tmp_path / "ha1.state") if state else None)


def _serve(b):
    """Start ``b`` and make it install what a primary home agent installs."""
    b.start()
    b.install(ForwardingRoute(HOME, COA, HA, (MNP,)))
    b.proxy_nd_start(HOME, "eth0")
    b.advertise_prefix(PREFIX)
    return b


def _crash(b):
    """What ``kill -9`` does to a backend: no stop(); the kernel closes its files, which ends
    the state file's lock (the record stays), and the TUN device goes with its routes."""
    if b.state is not None:
        b.state.release(remove=False)
    tun = getattr(b, "tun", None)
    if tun is not None:
        for key in [k for k, r in b.netlink.routes.items() if r["dev"] == tun.name]:
            del b.netlink.routes[key]


def _foreign(nl):
    """Entries that are not this daemon's: untagged or another protocol, another interface,
    another prefix, another table."""
    nl.neigh_proxy_add(OTHER, "eth0")  # an operator's, no protocol
    nl.neigh_proxy_add(HOME2, "eth0", proto=RTPROT_STATIC)
    nl.neigh_proxy_add(A("2001:db8:2::5"), "eth0", proto=RTPROT_HAHA)  # another prefix
    nl.neigh_proxy_add(A("2001:db8:1::55"), "eth1", proto=RTPROT_HAHA)  # another interface
    nl.route_replace(PREFIX2, metric=1024, kind="unreachable", proto=RTPROT_HAHA)
    nl.route_replace(PREFIX, table=100, metric=1024, kind="unreachable", proto=RTPROT_HAHA)
    nl.route_replace(N("2001:db8:1::/48"), metric=1024, kind="unreachable", proto=RTPROT_STATIC)
    return (set(nl.proxies) - {(HOME, "eth0")},
            {k for k in nl.routes if k != (PREFIX, None)})


def test_everything_installed_carries_the_haha_protocol_number(host, tmp_path):
    """Proxy entries, the prefix route and the routes into the TUN (home agent) and the rules
    and table route (mobile node) are all tagged with protocol 72."""
    b = host.tun_backend(_own(tmp_path))
    _serve(b)
    assert host.nl.proxy_protocols == {(HOME, "eth0"): RTPROT_HAHA}
    assert {k: r["proto"] for k, r in host.nl.routes.items()} == {
        (N(HOME), None): 72, (MNP, None): 72, (PREFIX, None): 72}
    t = MobileTunnel(MemoryReactor(), _Sender(), tun_name="hahamn%d", netlink=host.nl,
                     system=host.system)
    t.start()
    t.set_endpoint(HOME, COA, HA, prefixes=(MNP,))
    assert set(host.nl.rule_protocols.values()) == {RTPROT_HAHA} and len(host.nl.rules) == 2
    assert host.nl.routes[(N("::/0"), t.table)]["proto"] == RTPROT_HAHA


def test_a_restart_removes_what_a_crashed_run_left_and_nothing_else(host, tmp_path, logs):
    """A backend dropped without stop (kill -9) leaves its proxy entry and prefix route; the
    next backend of the same daemon removes exactly those at start (counted and logged),
    while untagged entries and tagged ones of another prefix, interface or table stay."""
    _crash(_serve(host.tun_backend(_own(tmp_path))))
    proxies, routes = _foreign(host.nl)
    assert (PREFIX, None) in host.nl.routes and (HOME, "eth0") in host.nl.proxies
    again = host.tun_backend(_own(tmp_path))
    again.start()
    assert host.nl.proxies == proxies
    assert set(host.nl.routes) == routes
    assert again.counters["leftovers_removed"] == 2
    text = "\n".join(logs)
    assert "an earlier run (pid" in text
    assert f"removed a leftover of an earlier run: proxy ND entry for {HOME} on eth0" in text
    assert f"removed a leftover of an earlier run: unreachable route {PREFIX}" in text
    # It serves as usual afterwards, and a clean stop leaves only the foreign entries.
    again.install(ForwardingRoute(HOME, COA, HA, ()))
    again.proxy_nd_start(HOME, "eth0")
    again.advertise_prefix(PREFIX)
    again.stop()
    assert host.nl.proxies == proxies and set(host.nl.routes) == routes


def test_without_a_state_file_the_current_scope_is_still_reclaimed(host, tmp_path):
    """Ownership without a state file: leftovers inside the current scope (tag, interface,
    prefix) are removed all the same."""
    _crash(_serve(host.tun_backend(_own(tmp_path, state=False))))
    proxies, routes = _foreign(host.nl)
    again = host.tun_backend(_own(tmp_path, state=False))
    again.start()
    assert host.nl.proxies == proxies and set(host.nl.routes) == routes
    assert again.counters["leftovers_removed"] == 2


def test_without_ownership_nothing_is_reclaimed(host):
    """A backend nobody told what it owns (embedders, unit tests) removes nothing at start."""
    _crash(_serve(host.tun_backend()))
    before = (set(host.nl.proxies), set(host.nl.routes))
    again = host.tun_backend()
    again.start()
    assert (set(host.nl.proxies), {k for k in host.nl.routes}) == before
    assert again.counters["leftovers_removed"] == 0


def test_a_second_start_of_the_same_daemon_is_refused_and_changes_nothing(host, tmp_path):
    """While one run holds the state file, another backend with the same ownership refuses to
    start (naming the pid) before it removes or opens anything."""
    first = host.tun_backend(_own(tmp_path))
    _serve(first)
    before = (set(host.nl.proxies), dict(host.nl.routes), set(host.system.tuns))
    second = host.tun_backend(_own(tmp_path))
    with pytest.raises(StateBusy, match=f"pid {os.getpid()}.*running already"):
        second.start()
    assert (set(host.nl.proxies), dict(host.nl.routes), set(host.system.tuns)) == before
    assert not second.running
    first.stop()
    second.start()  # the lock went with the first run
    assert second.counters["leftovers_removed"] == 0
    second.stop()


def test_a_clean_stop_deletes_the_state_file(host, tmp_path):
    """The record exists while the backend runs (pid, scope, table) and is gone after stop;
    the next start finds nothing to reclaim."""
    path = tmp_path / "ha1.state"
    b = host.tun_backend(_own(tmp_path), table=100)
    _serve(b)
    record = json.loads(path.read_text())
    assert record["pid"] == os.getpid()
    assert record["scope"] == {"prefix": str(PREFIX), "interface": "eth0",
                               "addresses": [str(HA)], "table": 100}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    b.stop()
    assert not path.exists()
    again = host.tun_backend(_own(tmp_path), table=100)
    again.start()
    assert again.counters["leftovers_removed"] == 0


def test_the_previous_scope_is_reclaimed_after_a_configuration_change(host, tmp_path):
    """The crashed run served another prefix on another interface in another table; the state
    file remembers it, so the new configuration's first start still removes those
    leftovers."""
    old = host.tun_backend(Ownership(PREFIX2, "eth1", frozenset({HA}),
                                     str(tmp_path / "ha1.state")), table=100)
    old.start()
    old.proxy_nd_start(A("2001:db8:2::100"), "eth1")
    old.advertise_prefix(PREFIX2)
    _crash(old)
    new = host.tun_backend(_own(tmp_path))
    new.start()
    assert host.nl.proxies == set() and host.nl.routes == {}
    assert new.counters["leftovers_removed"] == 2


def test_sysctl_values_from_before_the_crash_are_restored(host, tmp_path):
    """The crashed run turned forwarding and proxy_ndp on; the next run takes the values the
    crashed one found (0) as the originals and restores them at its stop, not its own 1."""
    _crash(_serve(host.tun_backend(_own(tmp_path))))
    nl = host.nl
    assert nl.sysctls["net.ipv6.conf.all.forwarding"] == "1"
    assert nl.sysctls["net.ipv6.conf.eth0.proxy_ndp"] == "1"
    again = host.tun_backend(_own(tmp_path))
    again.start()
    again.stop()
    assert nl.sysctls["net.ipv6.conf.all.forwarding"] == "0"
    assert nl.sysctls["net.ipv6.conf.eth0.proxy_ndp"] == "0"


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"pid": 5}',
                                     b'{"scope": {"prefix": "x"}}'])
def test_an_unreadable_record_is_ignored_and_replaced(host, tmp_path, content, logs):
    """A damaged state file is logged and replaced by this run's record; the current scope is
    reclaimed anyway."""
    (tmp_path / "ha1.state").write_bytes(content)
    _crash(_serve(host.tun_backend(_own(tmp_path, state=False))))
    b = host.tun_backend(_own(tmp_path))
    b.start()
    assert b.counters["leftovers_removed"] == 2
    assert json.loads((tmp_path / "ha1.state").read_text())["pid"] == os.getpid()
    assert any("kernel state record" in line for line in logs)


def test_a_state_file_that_cannot_be_opened_is_a_warning(host, tmp_path, logs):
    """A state file in a missing directory: the backend starts, says why nothing is locked,
    and still reclaims the current scope."""
    _crash(_serve(host.tun_backend(_own(tmp_path, state=False))))
    b = host.tun_backend(Ownership(PREFIX, "eth0", frozenset({HA}),
                                   str(tmp_path / "missing" / "ha1.state")))
    b.start()
    assert b.running and b.counters["leftovers_removed"] == 2
    assert any("cannot keep kernel state" in line for line in logs)


def test_state_file_lock_is_per_open_file(tmp_path):
    """StateFile: acquire returns the previous record, a second holder is refused, write
    replaces the record in place, release(remove=False) keeps it for the next run."""
    a = StateFile(tmp_path / "s.state")
    assert a.acquire() is None
    a.write({"pid": 1, "x": 2})
    b = StateFile(tmp_path / "s.state")
    with pytest.raises(StateBusy, match="pid 1"):
        b.acquire()
    a.release(remove=False)
    assert b.acquire() == {"pid": 1, "x": 2}
    b.release(remove=True)
    assert not (tmp_path / "s.state").exists()


def test_ownership_checks_its_fields():
    """Bad ownership fields are refused with a TypeError."""
    with pytest.raises(TypeError):
        Ownership("2001:db8:1::/64")
    with pytest.raises(TypeError):
        Ownership(PREFIX, "")
    with pytest.raises(TypeError):
        Ownership(PREFIX, "eth0", {"2001:db8:1::1"})


def _netlink_backend(host, ownership):
    b = NetlinkBackend(netlink=host.nl, kernel_config=lambda: "")
    b.ownership = ownership
    return b


def test_netlink_backend_removes_its_leftover_tunnels(host, tmp_path):
    """The netlink backend's crashed run left an ip6tnl link haha0 (and its routes); the next
    run removes it, but not a tunnel from another address or named otherwise (nor the kernel's
    ip6tnl0), and can make haha0 again."""
    host.nl.load_ip6_tunnel()  # a stock kernel: ip6tnl0 (:: -> ::) is there too
    first = _netlink_backend(host, _own(tmp_path))
    _crash(_serve(first))
    assert "haha0" in host.nl.tunnels
    host.nl.ip6tnl_add("haha7", A("2001:db8:5::1"), COA)  # another daemon's address
    host.nl.ip6tnl_add("gre6x", HA, A("2001:db8:20::99"))  # not named like ours
    again = _netlink_backend(host, _own(tmp_path))
    again.start()
    assert set(host.nl.tunnels) == {"haha7", "gre6x", "ip6tnl0"}
    assert again.counters["leftovers_removed"] == 3  # tunnel, proxy entry, prefix route
    assert (N(HOME), None) not in host.nl.routes  # the routes went with the tunnel
    again.install(ForwardingRoute(HOME, COA, HA, ()))
    assert host.nl.tunnels["haha0"] == (HA, COA)
    assert host.nl.routes[(N(HOME), None)] == {"dev": "haha0", "metric": None,
                                               "kind": "unicast", "proto": RTPROT_HAHA}
    again.stop()
    assert set(host.nl.tunnels) == {"haha7", "gre6x", "ip6tnl0"} and host.nl.routes == {}


def test_mobile_tunnel_removes_rules_an_earlier_run_left(host):
    """A mobile node killed while away leaves its policy rules (the TUN, its address and the
    table's route go with the process); the next start removes haha's rules into its table
    at its priority, keeps anyone else's, and sets the endpoint again without a clash."""
    first = MobileTunnel(MemoryReactor(), _Sender(), tun_name="hahamn%d", netlink=host.nl,
                         system=host.system)
    first.start()
    first.set_endpoint(HOME, COA, HA, prefixes=(MNP,))
    host.nl.routes.pop((N("::/0"), first.table))  # went with the TUN device
    host.nl.rule_add(N("2001:db8:7::/64"), first.table, 1000)  # untagged: an operator's
    host.nl.rule_add(N(HOME), 200, 1000, proto=RTPROT_HAHA)  # another table
    host.nl.rule_add(N(HOME), first.table, 900, proto=RTPROT_HAHA)  # another priority
    kept = set(host.nl.rules) - {(N(HOME), first.table, 1000), (MNP, first.table, 1000)}
    again = MobileTunnel(MemoryReactor(), _Sender(), tun_name="hahamn%d", netlink=host.nl,
                         system=host.system)
    again.start()
    assert host.nl.rules == kept
    assert again.counters["leftovers_removed"] == 2
    again.set_endpoint(HOME, COA, HA, prefixes=(MNP,))
    assert again.counters["netlink_errors"] == 0


@pytest.mark.parametrize("router", [False, True])
def test_mobile_tunnel_announces_the_home_address(host, router):
    """announce_home sends one unsolicited NA to all-nodes from our link-local address with
    Hop Limit 255: target the home address, our link-layer address, O set, S clear, R only
    for a mobile router (RFC 6275 11.5.4); refused while the tunnel is up."""
    tx = _Sender()
    t = MobileTunnel(MemoryReactor(), tx, tun_name="hahamn%d", netlink=host.nl,
                     system=host.system, router_flag=router)
    t.start()
    t.set_endpoint(HOME, COA, HA)
    with pytest.raises(RuntimeError, match="not home"):
        t.announce_home(HOME, "eth0")
    t.clear()
    with pytest.raises(TypeError):
        t.announce_home("2001:db8:1::100", "eth0")
    t.announce_home(HOME, "eth0")
    (packet, interface), = tx.sent
    assert interface == "eth0"
    p = parse_packet(packet)
    assert (p.src, p.dst, p.hop_limit) == (LL, A("ff02::1"), 255)
    na = decode_icmpv6(p.payload, p.src, p.dst)
    assert isinstance(na, NeighborAdvertisement) and na.target == HOME
    assert na.flags == NA_O | (NA_R if router else 0)
    assert [o.address for o in na.options] == [MAC]
    assert t.counters["unsolicited_na"] == 1
