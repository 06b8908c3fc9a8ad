"""The netlink backend (kernel ip6tnl): the clear refusal on this kernel, and its bookkeeping
against the netlink fake (its kernel paths are untested here: no ip6_tunnel)."""

from ipaddress import IPv6Address, IPv6Network

import pytest
from zope.interface.verify import verifyObject

from haha.backends.netlink import KernelUnsupported, NetlinkBackend, read_kernel_config
from haha.backends.netsys import FakeNetlink
from haha.core.duties import ForwardingRoute
from haha.interfaces import IForwardingBackend

HOME = IPv6Address("2001:db8:1::100")
HOME2 = IPv6Address("2001:db8:1::101")
COA = IPv6Address("2001:db8:20::5")
HA = IPv6Address("2001:db8:1::1")
EXPECTED = ("the netlink backend needs the kernel's IPv6-in-IPv6 tunnel driver (ip6_tunnel, "
            "CONFIG_IPV6_TUNNEL) and this kernel does not have it (CONFIG_IPV6_TUNNEL is not "
            "set); use backend = tun, which tunnels in user space")


def test_provides_the_backend_interface():
    """NetlinkBackend provides IForwardingBackend."""
    assert verifyObject(IForwardingBackend, NetlinkBackend(netlink=FakeNetlink()))


def test_start_says_exactly_what_is_missing():
    """On a kernel built without CONFIG_IPV6_TUNNEL, start() raises with a message naming the
    driver, the config option and the alternative backend."""
    b = NetlinkBackend(netlink=FakeNetlink(),
                       kernel_config=lambda: "# CONFIG_IPV6_TUNNEL is not set\n")
    with pytest.raises(KernelUnsupported) as e:
        b.start()
    assert str(e.value) == EXPECTED


def test_start_without_config_falls_back_to_probing():
    """Without a readable kernel configuration, a probe link that fails with EOPNOTSUPP gives
    the same clear refusal."""
    b = NetlinkBackend(netlink=FakeNetlink(), kernel_config=lambda: None)
    with pytest.raises(KernelUnsupported, match="ip6_tunnel.*Operation not supported"):
        b.start()


@pytest.mark.netns
@pytest.mark.stock_kernel
def test_this_machine_kernel_is_refused_or_accepted_honestly(require_root):
    """On this project's kernel (no ip6_tunnel) the real start() raises exactly the message; on
    a kernel that has the driver, start() succeeds in a fresh namespace beside the kernel's
    ip6tnl0, leaves no probe behind, and stop() cleans up."""
    config = read_kernel_config()
    if config is not None and "# CONFIG_IPV6_TUNNEL is not set" in config:
        with pytest.raises(KernelUnsupported) as e:
            NetlinkBackend().start()
        assert str(e.value) == EXPECTED
        return
    from haha.backends.netsys import Pyroute2Netlink
    from haha.lab.topology import Topology

    t = Topology()
    t.add_node("k")
    try:
        t.create()
        nl = Pyroute2Netlink(t.ns("k"))
        try:
            fallback = nl.ip6tnl_dump().get("ip6tnl0")
            b = NetlinkBackend(netlink=nl)
            b.start()
            assert nl.ip6tnl_dump() == ({"ip6tnl0": fallback} if fallback else {})
            b.stop()
        finally:
            nl.close()
    finally:
        t.destroy()


def test_tunnels_are_shared_per_care_of_and_removed_with_the_last_route():
    """With a kernel that has ip6tnl (the fake): one tunnel per (HA address, care-of), routes for
    home addresses and prefixes into it; the tunnel goes with its last route; stop cleans up."""
    nl = FakeNetlink()
    nl.load_ip6_tunnel(fallback=False)
    b = NetlinkBackend(netlink=nl, kernel_config=lambda: "")
    b.start()
    assert nl.sysctls["net.ipv6.conf.all.forwarding"] == "1" and nl.tunnels == {}
    b.install(ForwardingRoute(HOME, COA, HA, (IPv6Network("2001:db8:99::/48"),)))
    b.install(ForwardingRoute(HOME2, COA, HA))
    assert list(nl.tunnels.values()) == [(HA, COA)]
    name = next(iter(nl.tunnels))
    assert {k[0] for k, v in nl.routes.items() if v["dev"] == name} == {
        IPv6Network(HOME), IPv6Network(HOME2), IPv6Network("2001:db8:99::/48")}
    b.remove(HOME)
    assert nl.tunnels
    b.remove(HOME2)
    assert nl.tunnels == {} and nl.routes == {}
    b.install(ForwardingRoute(HOME, COA, HA))
    b.advertise_prefix(IPv6Network("2001:db8:1::/64"))
    b.stop()
    assert nl.tunnels == {} and nl.routes == {} and nl.sysctls[
        "net.ipv6.conf.all.forwarding"] == "0"


@pytest.mark.parametrize("fallback", [True, False])
def test_start_beside_the_kernel_fallback_tunnel(fallback):
    """A stock kernel with ip6_tunnel loaded has ip6tnl0 (:: -> ::) in every namespace: start()
    neither collides with it nor touches it, leaves no probe link behind, and the backend then
    tunnels; also without the fallback device (fb_tunnels_only_for_init_net)."""
    nl = FakeNetlink()
    nl.load_ip6_tunnel(fallback=fallback)
    before = dict(nl.tunnels)
    b = NetlinkBackend(netlink=nl, kernel_config=lambda: "CONFIG_IPV6_TUNNEL=m\n")
    b.start()
    assert nl.tunnels == before and not any(n.startswith("hahap") for n in nl.links)
    b.install(ForwardingRoute(HOME, COA, HA))
    assert sorted(nl.tunnels.values()) == sorted(list(before.values()) + [(HA, COA)])
    b.stop()
    assert nl.tunnels == before


def test_probe_link_already_there_proves_the_driver():
    """'File exists' for the probe (a link of that name left by a run with the same pid) is
    proof of the driver, not a failure: start() goes on and leaves that link alone."""
    import os
    nl = FakeNetlink()
    nl.load_ip6_tunnel()
    nl.ip6tnl_add(f"hahap{os.getpid() % 100000}", HA, COA)
    b = NetlinkBackend(netlink=nl, kernel_config=lambda: "")
    b.start()
    assert b.running and f"hahap{os.getpid() % 100000}" in nl.tunnels
    b.stop()


def test_other_probe_failures_are_raised():
    """A probe failure that says nothing about the driver (here: permission denied) is raised
    as it is, not mistaken for a missing driver."""
    from haha.backends.netsys import NetlinkFailure
    nl = FakeNetlink()
    nl.ip6tnl_error = NetlinkFailure("create ip6tnl: (1, 'Operation not permitted')", 1)
    b = NetlinkBackend(netlink=nl, kernel_config=lambda: "")
    with pytest.raises(NetlinkFailure, match="not permitted"):
        b.start()
    assert not b.running


def test_plugin_factories_touch_nothing():
    """The null and netlink factories build from a context holding their sections without
    system calls; the netlink backend takes the context's transport, ownership and netlink
    seam in the same step."""
    from twisted.internet.task import Clock

    from haha.backends import netlink, null
    from haha.backends.common import Ownership
    from haha.backends.context import BackendContext
    from haha.inifile import parse_ini
    from haha.io.memory import MemoryHub

    assert isinstance(null.build(BackendContext(parse_ini("[backend:null]\n")["backend:null"],
                                                Clock())), null.NullBackend)
    section = parse_ini("[backend:netlink]\ntable = 7\nforwarding = no\n")["backend:netlink"]
    b = netlink.build(BackendContext(section, Clock()))
    assert (b.table, b.enable_forwarding, b.transport, b.ownership) == (7, False, None, None)
    nl = FakeNetlink()
    transport = MemoryHub(Clock()).endpoint(IPv6Address("2001:db8:1::1"))
    own = Ownership(IPv6Network("2001:db8:1::/64"))
    b = netlink.build(BackendContext(parse_ini("[backend:netlink]\n")["backend:netlink"],
                                     Clock(), transport=transport, ownership=own, netlink=nl))
    assert (b.transport, b.ownership, b.netlink) == (transport, own, nl)


def test_start_leaves_ipv6_in_ipv6_to_the_kernel():
    """The netlink backend's start() asks the raw transport to let IPv6-in-IPv6 through its
    guard to the kernel's ip6tnl (which decapsulates the node's reverse-tunnelled packets);
    a transport without that notion (UDP, memory) is left alone."""
    from twisted.internet.testing import MemoryReactor

    from haha.io.raw import RawTransport
    from haha.io.system import FakeSystem

    system = FakeSystem({"lo": 1, "eth0": 2})
    tx = RawTransport(MemoryReactor(), system=system, table="haha_test_9")
    tx.start(lambda p: None)
    assert "{ 41, 50, 135 }" in system.nft_scripts[-1]
    nl = FakeNetlink()
    nl.load_ip6_tunnel()
    b = NetlinkBackend(transport=tx, netlink=nl, kernel_config=lambda: "")
    b.start()
    assert tx.kernel_tunnels and "{ 50, 135 }" in system.nft_scripts[-1]
    b.stop()
    other = NetlinkBackend(transport=object(), netlink=nl, kernel_config=lambda: "")
    other.start()
    assert other.running


def test_snapshot_reports_kernel_routes_and_tunnel_packets():
    """The control socket's forwarding snapshot names the routes in the kernel's tunnels and
    the kernel's packet counters of each tunnel (tx = encapsulated, rx = decapsulated)."""
    nl = FakeNetlink()
    nl.load_ip6_tunnel()
    b = NetlinkBackend(netlink=nl, kernel_config=lambda: "")
    b.start()
    b.install(ForwardingRoute(HOME, COA, HA, (IPv6Network("2001:db8:99::/48"),)))
    (name,) = b.snapshot()["tunnels"]
    nl.links[name]["stats"].update(tx_packets=5, rx_packets=3)
    snap = b.snapshot()
    assert snap["kernel_routes"] == ["2001:db8:1::100/128", "2001:db8:99::/48"]
    assert snap["tunnel_packets"] == {name: {"encapsulated": 5, "decapsulated": 3}}
    b.stop()
    assert b.snapshot()["tunnel_packets"] == {} and b.snapshot()["kernel_routes"] == []
