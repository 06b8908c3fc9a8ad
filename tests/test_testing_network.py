"""The public in-memory network (haha.testing): encoded packets, a deterministic clock, link
loss, duplication, reordering and partitions, restarts, and the forwarding recorder."""

from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.duties import ForwardingRoute
from haha.core.effects import AdvertisePrefix, InstallRoute, ProxyNd, RemoveRoute, TunnelDown
from haha.core.effects import TunnelUp
from haha.testing import ForwardingRecorder, Network


def three(seed=0, **kw):
    net = Network(seed=seed)
    has = net.add_home_agents(3, **kw)
    net.run_for(20)
    return net, has


def register(net, has, count=10, spread=3):
    mns = []
    for i in range(count):
        mn = net.add_mobile_node(f"mn{i}", home_address=A(f"2001:db8:1::{0x100 + i:x}"),
                                 home_agents=[has[i % spread].address])
        mn.start(A(f"2001:db8:99::{i + 1:x}"))
        mns.append(mn)
    net.run_until_idle(timeout=600)
    return mns


def trace(seed, **link):
    net, has = three(seed)
    names = [h.name for h in has]
    net.set_links(names, names, **link)
    mns = register(net, has, count=20)
    return (net.now, dict(net.counters), [m.machine.sequence for m in mns],
            [sorted(h.machine.counters.items()) for h in has])


def test_home_agents_find_each_other_and_packets_are_real_bytes():
    """Three home agents greet each other through encoded HELLOs and serve after boot; every
    packet decoded on arrival (nothing undecodable)."""
    net, has = three()
    assert all(h.machine.state == "serving" and len(h.machine.peers) == 2 for h in has)
    assert net.counters["delivered"] > 0 and net.counters["undecodable"] == 0
    mns = register(net, has)
    assert all(m.machine.state == "registered" for m in mns)
    assert net.identical_caches() and len(has[0].snapshot()) == 10


def test_same_seed_same_run_other_seed_other_run():
    """The whole run (clock, link decisions, machines' random numbers) follows the seed."""
    assert trace(11, loss=0.3, duplicate=0.2, reorder=0.05) == \
        trace(11, loss=0.3, duplicate=0.2, reorder=0.05)
    assert trace(11, loss=0.3) != trace(12, loss=0.3)


def test_loss_duplication_and_reordering_happen_and_are_survived():
    """Lossy, duplicating, reordering HA-HA links still end with identical caches."""
    net, has = three(seed=3, ha_lifetime=120)
    names = [h.name for h in has]
    net.set_links(names, names, loss=0.25, duplicate=0.25, reorder=0.2)
    register(net, has, count=30)
    assert net.counters["lost"] > 0 and net.counters["duplicated"] > 0
    assert net.identical_caches() and len(has[0].snapshot()) == 30
    assert all(len(v) == 1 for v in net.primaries().values())


def test_partition_blocks_both_directions_until_healed():
    """A partition drops packets both ways; healing lets retransmission catch up."""
    net, has = three()
    net.partition(["ha1"], ["ha2", "ha3"])
    mn = net.add_mobile_node("mn", home_address="2001:db8:1::50", home_agents=[has[0].address])
    mn.start("2001:db8:99::50")
    net.run_for(5)
    assert net.counters["partitioned"] > 0
    assert A("2001:db8:1::50") not in has[1].machine.cache
    net.heal()
    net.run_until_idle(timeout=60)
    assert net.identical_caches()


def test_kill_and_restart_with_empty_state():
    """A killed home agent is silent; restarted, it starts from nothing and relearns."""
    net, has = three()
    register(net, has, count=6)
    net.kill("ha3")
    with pytest.raises(RuntimeError):
        has[2].drain()
    net.run_for(5)
    assert net.counters["dead"] + net.counters["no-route"] > 0
    net.start("ha3")
    assert has[2].incarnation == 1 and len(has[2].machine.cache) == 0
    net.run_for(16)
    net.run_until_idle(timeout=60)
    assert len(has[2].snapshot()) == 6 and net.identical_caches()
    with pytest.raises(RuntimeError):
        net.start("ha3")


def test_anycast_reaches_a_live_home_agent():
    """DHAAD to the Home-Agents anycast address is delivered to one live home agent."""
    net, has = three()
    mn = net.add_mobile_node("mn", home_address="2001:db8:1::60")
    mn.start("2001:db8:99::60")
    net.run_until_idle(timeout=30)
    assert mn.machine.state == "registered"
    assert sum(h.machine.counters["dhaad-replied"] for h in has) == 1


def test_run_until_idle_times_out_loudly():
    """A network that cannot settle raises TimeoutError naming the busy nodes."""
    net, has = three()
    mn = net.add_mobile_node("mn", home_address="2001:db8:1::70",
                             home_agents=["2001:db8:1::99"])
    mn.start("2001:db8:99::70")
    with pytest.raises(TimeoutError, match="mn"):
        net.run_until_idle(timeout=10)


def test_links_and_names_are_checked():
    """Unknown link conditions and duplicate node names are refused."""
    net = Network()
    with pytest.raises(AttributeError):
        net.set_links(["a"], ["b"], jitter=1)
    net.add_mobile_node("mn", home_address="2001:db8:1::1")
    with pytest.raises(ValueError):
        net.add_mobile_node("mn", home_address="2001:db8:1::2")


def test_forwarding_recorder_applies_effects():
    """The recorder holds what a backend would: routes, proxied addresses, prefixes, tunnel."""
    rec = ForwardingRecorder()
    hoa = A("2001:db8:1::10")
    route = ForwardingRoute(hoa, A("2001:db8:99::1"), A("2001:db8:1::1"))
    for e in (InstallRoute(route), ProxyNd(hoa), AdvertisePrefix(N("2001:db8:1::/64")),
              TunnelUp(hoa, A("2001:db8:99::1"), A("2001:db8:1::1"))):
        assert rec.apply(e)
    assert rec.routes == {hoa: route} and rec.proxied == {hoa}
    assert rec.advertised == {N("2001:db8:1::/64")} and rec.tunnel.home_address == hoa
    for e in (RemoveRoute(hoa), ProxyNd(hoa, False), AdvertisePrefix(N("2001:db8:1::/64"), False),
              TunnelDown(hoa)):
        rec.apply(e)
    assert (rec.routes, rec.proxied, rec.advertised, rec.tunnel) == ({}, set(), set(), None)
    assert not rec.apply(object()) and len(rec.log) == 8


def test_mobile_node_tunnel_is_recorded():
    """A registered node's tunnel shows in its recorder; returning home takes it down."""
    net, has = three()
    (mn,) = register(net, has, count=1)
    assert mn.forwarding.tunnel.home_agent == has[0].address
    mn.return_home()
    net.run_until_idle(timeout=30)
    assert mn.forwarding.tunnel is None and mn.machine.state == "home"
    assert not net.primaries()
