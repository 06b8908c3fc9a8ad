"""The mobile node's kernel tunnel (``backend = netlink``, ip6tnl links) against the netlink
fake (tier 2, no root): what set_endpoint creates, changes and removes on a move, a switch to
another home agent, clear and stop; the leftovers of a killed run; the refusal on a kernel
without ip6_tunnel; the mobile node's configuration. The kernel data path itself runs in the
stock-kernel tier (tests/test_e2e_mn_kernel_netns.py)."""

from collections import Counter
from ipaddress import IPv6Address, IPv6Network

import pytest
from twisted.internet.testing import MemoryReactor
from zope.interface import implementer
from zope.interface.verify import verifyObject

from haha.backends.netlink import KernelUnsupported
from haha.backends.netlink_mobile import KernelMobileTunnel
from haha.backends.netsys import RTPROT_HAHA, FakeNetlink, NetlinkFailure
from haha.config import mobile_node_from_text
from haha.inifile import ConfigError
from haha.interfaces import (IHomeAnnouncer, IKernelTunnels, IMobileTunnel, ISnapshot,
                             IStartStop)
from haha.io.raw import RawTransport
from haha.io.system import FakeSystem
from haha.wire.icmpv6 import NA_O, NeighborAdvertisement, decode_icmpv6
from haha.wire.ipv6 import parse_packet

HA = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:1::2")
HA3 = IPv6Address("2001:db8:1::3")
HOME = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:20::5")
COA2 = IPv6Address("2001:db8:21::5")
MNP = IPv6Network("2001:db8:100::/48")
LL = IPv6Address("fe80::5")
MAC = b"\x02\xaa\xbb\xcc\xdd\x05"
TABLE = 0x4D4E
DEFAULT = IPv6Network("::/0")
NO_DRIVER = ("the netlink backend needs the kernel's IPv6-in-IPv6 tunnel driver (ip6_tunnel, "
             "CONFIG_IPV6_TUNNEL) and this kernel does not have it (CONFIG_IPV6_TUNNEL is not "
             "set); use backend = tun, which tunnels in user space")


@implementer(IKernelTunnels)
class _Transport:
    """Sends (records) packets and is told whether to leave IPv6-in-IPv6 to the kernel."""

    def __init__(self):
        self.sent = []
        self.kernel_tunnels = False
        self.counters = Counter()

    def send(self, packet, interface=None):
        self.sent.append((packet, interface))

    def leave_tunnels_to_kernel(self, enabled=True):
        self.kernel_tunnels = enabled


def _stock_netlink():
    """A fake of a stock kernel's namespace: eth0, and ip6_tunnel loaded (ip6tnl0 exists)."""
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL, COA]}})
    nl.load_ip6_tunnel()
    return nl


def _tunnel(steer_mark=None, **kw):
    nl = _stock_netlink()
    tx = _Transport()
    t = KernelMobileTunnel(tx, netlink=nl, kernel_config=lambda: "", steer_mark=steer_mark,
                           **kw)
    t.start()
    nl.log.clear()  # the probe's link
    return t, nl, tx


def _ours(nl):
    """{name: (local, remote)} of the fake's ip6tnl links other than the kernel's ip6tnl0."""
    return {n: e for n, e in nl.tunnels.items() if n != "ip6tnl0"}


def _home_on(nl):
    """The links holding the home address."""
    return sorted(d for a, d in nl.addresses if a.ip == HOME)


def test_provides_the_mobile_tunnel_interfaces():
    """KernelMobileTunnel provides what the mobile node's adapter and service use
    (IMobileTunnel, IStartStop, IHomeAnnouncer, ISnapshot for ``haha-ctl tunnel``); it takes
    no IPv6-in-IPv6 from the transport (IDecapsulator): the kernel decapsulates."""
    from haha.interfaces import IDecapsulator

    t = KernelMobileTunnel(_Transport(), netlink=_stock_netlink(), kernel_config=lambda: "")
    for interface in (IMobileTunnel, IStartStop, IHomeAnnouncer, ISnapshot):
        assert verifyObject(interface, t)
    assert not IDecapsulator.providedBy(t)


def test_start_is_refused_on_a_kernel_without_ip6_tunnel_and_changes_nothing():
    """A kernel built without CONFIG_IPV6_TUNNEL, or one where creating an ip6tnl link fails
    with 'Operation not supported', refuses start with the one-line message naming the driver
    and the alternative; the transport's guard and an earlier run's rules are left as they
    were."""
    nl = FakeNetlink({"eth0": {}})  # ip6tnl_add fails with EOPNOTSUPP, as on this kernel
    nl.rule_add(IPv6Network(f"{HOME}/128"), TABLE, 1000, proto=RTPROT_HAHA)
    tx = _Transport()
    t = KernelMobileTunnel(tx, netlink=nl, kernel_config=lambda: "# CONFIG_IPV6_TUNNEL is not set\n")
    with pytest.raises(KernelUnsupported) as e:
        t.start()
    assert str(e.value) == NO_DRIVER
    probing = KernelMobileTunnel(tx, netlink=nl, kernel_config=lambda: None)
    with pytest.raises(KernelUnsupported, match="ip6_tunnel.*Operation not supported"):
        probing.start()
    assert not t.running and not probing.running and not tx.kernel_tunnels
    assert nl.rules == {(IPv6Network(f"{HOME}/128"), TABLE, 1000)} and nl.tunnels == {}
    with pytest.raises(RuntimeError, match="not started"):
        t.set_endpoint(HOME, COA, HA)


def test_start_beside_the_kernel_fallback_tunnel_leaves_ipv6_in_ipv6_to_the_kernel():
    """On a stock kernel (ip6tnl0 in the namespace) start succeeds, leaves no probe link and
    ip6tnl0 alone, and the raw transport's guard stops dropping IPv6-in-IPv6 (protocol 41) so
    that the ip6tnl links receive it; stop gives it back to the guard."""
    system = FakeSystem({"lo": 1, "eth0": 2})
    tx = RawTransport(MemoryReactor(), system=system, table="haha_test_mn")
    tx.start(lambda p: None)
    assert "{ 41, 50, 135 }" in system.nft_scripts[-1]
    nl = _stock_netlink()
    t = KernelMobileTunnel(tx, netlink=nl, kernel_config=lambda: "")
    t.start()
    assert tx.kernel_tunnels and "{ 50, 135 }" in system.nft_scripts[-1]
    assert set(nl.links) == {"eth0", "ip6tnl0"} and set(nl.tunnels) == {"ip6tnl0"}
    with pytest.raises(RuntimeError, match="already started"):
        t.start()
    t.stop()
    assert not tx.kernel_tunnels and "{ 41, 50, 135 }" in system.nft_scripts[-1]
    assert not t.running


def test_set_endpoint_builds_the_kernel_tunnel_and_the_policy_routing():
    """Away from home: an ip6tnl link from the care-of address to the registered home agent
    (up, outer Hop Limit 64, carrying the steering mark) holds the home address; the node's
    table has one default route into it (haha's protocol); rules from the home address and the
    mobile network prefix, and the two steering rules, send traffic to that table; a
    receive-only link to each other home agent of the list carries no address and no route."""
    t, nl, _ = _tunnel(steer_mark=77)
    t.set_endpoint(HOME, COA, HA, prefixes=(MNP,), home_agents=(HA, HA2))
    assert _ours(nl) == {"hahamn0": (COA, HA), "hahamn1": (COA, HA2)}
    assert nl.tunnel_options["hahamn0"] == {"hop_limit": 64, "fwmark": 77}
    assert nl.links["hahamn0"]["up"] and nl.links["hahamn1"]["up"]
    assert _home_on(nl) == ["hahamn0"]
    assert nl.routes == {(DEFAULT, TABLE): {"dev": "hahamn0", "metric": None,
                                            "kind": "unicast", "proto": RTPROT_HAHA}}
    assert nl.rules == {(IPv6Network(f"{HOME}/128"), TABLE, 1000), (MNP, TABLE, 1000)}
    assert set(nl.rule_protocols.values()) == {RTPROT_HAHA}
    assert nl.steering == {(TABLE, 1001, 77): RTPROT_HAHA}
    snap = t.snapshot()
    assert snap["device"] == "hahamn0" and snap["tunnels"] == {
        "hahamn0": [str(COA), str(HA)], "hahamn1": [str(COA), str(HA2)]}
    assert snap["tunnel_packets"] == {"hahamn0": {"encapsulated": 0, "decapsulated": 0},
                                      "hahamn1": {"encapsulated": 0, "decapsulated": 0}}
    plain, nl2, _ = _tunnel()
    plain.set_endpoint(HOME, COA, HA)
    assert nl2.tunnel_options["hahamn0"]["fwmark"] is None and nl2.steering == {}


def test_a_move_repoints_every_link_to_the_new_care_of_address():
    """A new care-of address makes new links from it (to the home agent and each other one),
    moves the home address and the table's default route to the new link, then deletes the old
    links (make before break); the rules and steering, which name no link, are not touched."""
    t, nl, _ = _tunnel(steer_mark=77)
    t.set_endpoint(HOME, COA, HA, prefixes=(MNP,), home_agents=(HA, HA2))
    mark = len(nl.log)
    t.set_endpoint(HOME, COA2, HA, prefixes=(MNP,), home_agents=(HA, HA2))
    assert _ours(nl) == {"hahamn2": (COA2, HA), "hahamn3": (COA2, HA2)}
    assert _home_on(nl) == ["hahamn2"]
    assert nl.routes[(DEFAULT, TABLE)]["dev"] == "hahamn2"
    assert len(nl.rules) == 2 and len(nl.steering) == 1
    changes = [e[0] for e in nl.log[mark:]]
    assert "rule_delete" not in changes and "steer_add" not in changes
    assert changes.index("route_replace") < changes.index("link_delete")
    assert t.care_of == COA2 and t.snapshot()["device"] == "hahamn2"


def test_a_switch_moves_the_home_address_and_route_to_the_new_home_agent_link():
    """A new home agent at the same care-of address (a switch request, or registering
    elsewhere) reuses its receive-only link: the home address and the default route move to
    it, the old home agent's link stays receive-only while it is in the list and goes once it
    is not; nothing is created again."""
    t, nl, _ = _tunnel()
    t.set_endpoint(HOME, COA, HA, home_agents=(HA, HA2))
    t.set_endpoint(HOME, COA, HA2, home_agents=(HA, HA2))
    assert _ours(nl) == {"hahamn0": (COA, HA), "hahamn1": (COA, HA2)}
    assert _home_on(nl) == ["hahamn1"]
    assert nl.routes[(DEFAULT, TABLE)]["dev"] == "hahamn1"
    assert [e for e in nl.log if e[0] == "ip6tnl_add"] == [
        ("ip6tnl_add", "hahamn0", str(COA), str(HA)), ("ip6tnl_add", "hahamn1", str(COA), str(HA2))]
    t.set_endpoint(HOME, COA, HA2, home_agents=(HA2, HA3))
    assert _ours(nl) == {"hahamn1": (COA, HA2), "hahamn2": (COA, HA3)}
    assert _home_on(nl) == ["hahamn1"] and t.home_agents == frozenset({HA2, HA3})


def test_clear_and_stop_remove_everything_and_announce_home_works_only_when_home():
    """clear() (back home) removes rules, steering, the route and every link with the home
    address on it, and is idempotent; announce_home refuses while the tunnel is up and then
    sends one unsolicited NA (Override set) for the home address on the home interface; stop()
    after a new endpoint removes everything as well."""
    t, nl, tx = _tunnel(steer_mark=77)
    t.set_endpoint(HOME, COA, HA, prefixes=(MNP,), home_agents=(HA, HA2))
    with pytest.raises(RuntimeError, match="still up"):
        t.announce_home(HOME, "eth0")
    t.clear()
    t.clear()
    assert _ours(nl) == {} and nl.addresses == set() and nl.routes == {}
    assert nl.rules == set() and nl.steering == {} and set(nl.links) == {"eth0", "ip6tnl0"}
    assert t.snapshot()["tunnels"] == {} and t.home_address is None
    packet = t.announce_home(HOME, "eth0")
    assert tx.sent == [(packet, "eth0")]
    outer = parse_packet(packet)
    na = decode_icmpv6(outer.payload, outer.src, outer.dst)
    assert isinstance(na, NeighborAdvertisement) and na.target == HOME and na.flags & NA_O
    t.set_endpoint(HOME, COA2, HA, home_agents=(HA2,))
    assert len(_ours(nl)) == 2
    t.stop()
    assert _ours(nl) == {} and nl.routes == {} and nl.rules == set() and not tx.kernel_tunnels


def test_start_reclaims_what_a_killed_run_left_and_nothing_else():
    """ip6tnl links, their addresses and the rules outlive a killed daemon: the next start
    removes links named like its own (device prefix + number), haha's rules and steering rules
    in its table and haha's routes left there, counts and logs each, and leaves ip6tnl0,
    other links, other tables' rules and an operator's rule alone."""
    t, nl, _ = _tunnel(steer_mark=77)
    t.set_endpoint(HOME, COA, HA, prefixes=(MNP,), home_agents=(HA, HA2))
    # kill -9: the kernel keeps all of it
    nl.ip6tnl_add("hahax0", COA, HA3)  # another prefix: not ours
    nl.rule_add(IPv6Network("2001:db8:5::/64"), TABLE, 1000)  # an operator's, no protocol
    nl.rule_add(IPv6Network("2001:db8:6::/64"), 500, 1000, proto=RTPROT_HAHA)  # another table
    nl.route_replace(IPv6Network("2001:db8:7::/64"), table=TABLE, proto=RTPROT_HAHA)
    again = KernelMobileTunnel(_Transport(), netlink=nl, kernel_config=lambda: "",
                               steer_mark=77)
    again.start()
    assert set(_ours(nl)) == {"hahax0"} and "ip6tnl0" in nl.tunnels
    assert nl.rules == {(IPv6Network("2001:db8:5::/64"), TABLE, 1000),
                        (IPv6Network("2001:db8:6::/64"), 500, 1000)}
    assert nl.steering == {} and nl.routes == {} and nl.addresses == set()
    # 2 links (their default route went with hahamn0), 2 rules, the steering pair, 1 route
    assert again.counters["leftovers_removed"] == 6
    again.set_endpoint(HOME, COA, HA)
    assert _home_on(nl) == ["hahamn0"]


def test_kernel_refusals_are_counted_and_the_rest_still_installed():
    """A link the kernel refuses (here: its end points are taken) is logged and counted, not
    raised: a refused receive-only link leaves the rest working; without the link to the
    home agent the node has no route out, counted as no_tunnel_to_home_agent."""
    t, nl, _ = _tunnel()
    nl.ip6tnl_add("other0", COA, HA2)  # someone's link with the same end points
    t.set_endpoint(HOME, COA, HA, home_agents=(HA2,))
    assert t.counters["netlink_errors"] == 1
    assert _home_on(nl) == ["hahamn0"] and nl.routes[(DEFAULT, TABLE)]["dev"] == "hahamn0"
    nl.ip6tnl_error = NetlinkFailure("create ip6tnl: no memory", 12)
    t.set_endpoint(HOME, COA2, HA)
    assert t.counters["no_tunnel_to_home_agent"] == 1 and nl.routes == {}
    assert _home_on(nl) == [] and set(_ours(nl)) == {"other0"}


def test_a_new_home_address_moves_to_the_same_link_and_a_failed_switch_leaves_no_address():
    """A new home address at the same care-of address and home agent replaces the old one on
    the same link (and its rule); a switch whose new link the kernel refuses leaves the home
    address on no link (the old home agent's link only receives) and no route."""
    home2 = IPv6Address("2001:db8:1::200")
    t, nl, _ = _tunnel()
    t.set_endpoint(HOME, COA, HA, home_agents=(HA, HA2))
    t.set_endpoint(home2, COA, HA, home_agents=(HA, HA2))
    assert sorted((str(a.ip), d) for a, d in nl.addresses) == [(str(home2), "hahamn0")]
    assert nl.rules == {(IPv6Network(f"{home2}/128"), TABLE, 1000)}
    nl.ip6tnl_error = NetlinkFailure("create ip6tnl: no memory", 12)
    t.set_endpoint(home2, COA, HA3, home_agents=(HA, HA3))
    assert nl.addresses == set() and nl.routes == {}
    assert set(_ours(nl)) == {"hahamn0"} and t.counters["no_tunnel_to_home_agent"] == 1


def test_bad_arguments_change_nothing():
    """Wrong types in set_endpoint raise TypeError before anything changes; a reserved table,
    a hop limit, MTU, steering mark or device prefix out of range are refused at
    construction."""
    t, nl, _ = _tunnel()
    t.set_endpoint(HOME, COA, HA)
    before = (dict(nl.tunnels), set(nl.addresses), dict(nl.routes), set(nl.rules))
    for args in [("2001:db8::1", COA, HA), (HOME, COA, HA, ("2001:db8::/48",)),
                 (HOME, COA, HA, (), ("2001:db8:1::2",))]:
        with pytest.raises(TypeError):
            t.set_endpoint(*args)
    assert (dict(nl.tunnels), set(nl.addresses), dict(nl.routes), set(nl.rules)) == before
    for kw in [{"table": 254}, {"hop_limit": 0}, {"mtu": 1000}, {"steer_mark": 0},
               {"device": "a-very-long-prefix"}, {"device": "9x"}]:
        with pytest.raises(ValueError):
            KernelMobileTunnel(_Transport(), netlink=nl, **kw)


MN = """\
[mobile-node]
home-address = 2001:db8:1::100
home-prefix = 2001:db8:1::/64
home-agent = 2001:db8:1::1
care-of-address = 2001:db8:20::5
backend = netlink
[security]
mode = none
lab = yes
"""


def _build(text):
    from haha.service import _mobile_tunnel

    config = mobile_node_from_text(text, "/etc/haha/mn.conf")
    tx = RawTransport(MemoryReactor(), system=FakeSystem({"lo": 1, "eth0": 2}),
                      table="haha_test_cfg")
    return _mobile_tunnel(config, MemoryReactor(), tx), tx


def test_a_mobile_node_configuration_chooses_the_kernel_tunnel():
    """``backend = netlink`` in a mobile node's file builds the kernel tunnel with its
    ``[backend:netlink]`` keys; the default source is the home address, so the transport's
    packets carry the mark and so do the links; ``default-source = care-of`` steers nothing."""
    t, tx = _build(MN + "[backend:netlink]\ndevice = mk\nmtu = 1400\nhop-limit = 30\n"
                   "table = 300\nmark = 9\n")
    assert isinstance(t, KernelMobileTunnel)
    assert (t.device, t.mtu, t.hop_limit, t.table, t.steer_mark, tx.mark) == (
        "mk", 1400, 30, 300, 9, 9)
    plain, tx2 = _build(MN + "[backend:netlink]\ndefault-source = care-of\n")
    assert (plain.device, plain.mtu, plain.hop_limit, plain.table, plain.steer_mark) == (
        "hahamn", None, 64, TABLE, None)


@pytest.mark.parametrize("extra, key", [
    ("device = not/a/name\n", "device"),
    ("mtu = 1000\n", "mtu"),
    ("hop-limit = 0\n", "hop-limit"),
    ("bogus = 1\n", "bogus"),
])
def test_a_bad_kernel_tunnel_key_stops_start_up_naming_file_section_key_and_line(extra, key):
    """A bad or unknown key of a mobile node's [backend:netlink] is a ConfigError naming the
    file, the section, the key and its line, raised before anything is built."""
    with pytest.raises(ConfigError) as e:
        _build(MN + "[backend:netlink]\n" + extra)
    text = str(e.value)
    assert "/etc/haha/mn.conf" in text and "backend:netlink" in text and key in text
    assert text.startswith("/etc/haha/mn.conf:11: [backend:netlink]")  # the key's line


def test_the_kernel_tunnel_keys_are_documented(monkeypatch):
    """Every key a mobile node's [backend:netlink] (and [backend:tun]) reads has a row in that
    section's table of docs/configuration.md."""
    from test_config_docs import documented, read_keys

    seen = read_keys(monkeypatch)
    _build(MN)
    _build(MN.replace("backend = netlink", "backend = tun"))
    keys = {(s, k) for s, k in seen if s.startswith("backend:")}
    assert ("backend:netlink", "device") in keys and ("backend:tun", "mark") in keys
    docs = documented()
    missing = sorted(f"[{s}] {k}" for s, k in keys if k not in docs.get(s, set()))
    assert not missing, f"undocumented: {missing}"


def test_the_daemon_drives_the_kernel_tunnel_through_registration_move_and_return_home(
        tmp_path):
    """A mobile node service on the in-memory network with the kernel tunnel (on the fake of a
    stock kernel): once registered with ha1 its links run from the care-of address to ha1
    (holding the home address) and to ha2/ha3 (receive-only, the node's Home Agent list);
    ``haha-ctl tunnel`` shows them; after ``move`` they run from the new care-of address only;
    ``home`` removes every link and rule before the node announces its home address."""
    from test_service import HAS, HOA, MN_TEXT, Network

    from haha.service import MobileNodeService

    net = Network(tmp_path)
    nl = FakeNetlink({"eth0": {"mac": MAC, "addresses": [LL]}})
    nl.load_ip6_tunnel()
    tunnel = KernelMobileTunnel(net.mn_end, netlink=nl, kernel_config=lambda: "")
    text = MN_TEXT.format(keys=tmp_path).replace("lifetime = 60\n",
                                                 "lifetime = 60\ninterface = eth0\n")
    mn = MobileNodeService.build(mobile_node_from_text(text, str(tmp_path / "mn.conf")),
                                 net.clock, transport=net.mn_end, tunnel=tunnel)
    net.mn = mn
    try:
        net.start()
        coa = IPv6Address(mn.status()["care_of"])
        assert mn.status()["state"] == "registered"
        shown = mn.command("tunnel", {})
        assert shown["home_agent"] == str(HAS[0]) and shown["device"] == "hahamn0"
        assert sorted(shown["tunnels"].values()) == sorted([str(coa), str(h)] for h in HAS)
        assert _home_on_address(nl, HOA) == ["hahamn0"]
        assert (IPv6Network(f"{HOA}/128"), TABLE, 1000) in nl.rules
        net.mn_end.add_address(COA2)
        mn.command("move", {"care-of": str(COA2)})
        net.run(3)
        assert mn.status()["care_of"] == str(COA2)
        assert sorted(_ours(nl).values()) == sorted((COA2, h) for h in HAS)
        (to_ha1,) = [n for n, (_, remote) in _ours(nl).items() if remote == HAS[0]]
        assert nl.routes[(DEFAULT, TABLE)]["dev"] == to_ha1
        assert _home_on_address(nl, HOA) == [to_ha1]
        net.mn_end.add_address(HOA)
        mn.command("home", {})
        net.run(3)
        assert mn.status()["state"] == "home"
        assert _ours(nl) == {} and nl.rules == set() and nl.routes == {}
        assert mn.counters()["home-na-sent"] == 1
    finally:
        net.stop_all()


def _home_on_address(nl, address):
    return sorted(d for a, d in nl.addresses if a.ip == address)


@pytest.mark.netns
@pytest.mark.stock_kernel
def test_this_machine_kernel_is_refused_in_one_line_or_accepted(tmp_path, require_root):
    """On a kernel without ip6_tunnel (this project's) ``twistd haha-mn`` with ``backend =
    netlink`` stops with exactly one line, the driver's message, status 2, no traceback; on a
    kernel with it (the stock-kernel tier) the real tunnel starts in a fresh namespace beside
    ip6tnl0, leaves no probe link, and its stop leaves no link of its own."""
    import os
    import subprocess

    from haha.backends.netlink import read_kernel_config
    from test_startup import mn_text, one_line, twistd

    config = read_kernel_config()
    if config is not None and "# CONFIG_IPV6_TUNNEL is not set" in config:
        os.chmod(tmp_path, 0o755)
        r = twistd(str(tmp_path), mn_text(extra="backend = netlink"), kind="haha-mn")
        assert one_line(r, "haha-mn") == f"haha-mn: {NO_DRIVER}"
        return
    from haha.backends.netsys import Pyroute2Netlink

    ns = f"hahamk{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        nl = Pyroute2Netlink(ns)
        t = KernelMobileTunnel(None, netlink=nl)
        t.start()
        assert set(nl.ip6tnl_dump()) == {"ip6tnl0"}
        t.stop()
        assert set(nl.ip6tnl_dump()) == {"ip6tnl0"}
        nl.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
