"""haha.lab.deploy without root: the configurations written for each standard topology are
accepted by the daemons' own loaders and say what the draft's section 3 configuration needs;
nothing is created until the topology is (tier 3 runs them: tests/test_e2e_netns.py)."""

from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.config import load_home_agent, load_mobile_node
from haha.lab import topology
from haha.lab.deploy import MOBILE_NETWORK, NetnsDeployment


@pytest.mark.parametrize("kind", sorted(topology.TOPOLOGIES))
def test_configurations_load_for_every_topology(tmp_path, kind):
    """Three home agents and a mobile node: raw transport, tun backend, ESP keys for every
    pair; the kind, home interface, peers and addresses match the topology."""
    topo = topology.TOPOLOGIES[kind](n_has=3, n_mns=1, tag="cfgtest")
    d = NetnsDeployment(topo, tmp_path)
    d.write()
    configs = [load_home_agent(ha.config) for ha in d.has]
    for ha, c in zip(d.has, configs):
        assert c.transport.kind == "raw" and c.backend.name == "tun"
        assert c.security.mode == "esp" and str(c.address) == ha.address
        assert c.configuration == {"shared-home-link": "home-link"}.get(kind, kind)
        others = {IPv6Address(h.signalling) for h in d.has if h is not ha}
        assert set(c.security.peer_keys) == others
        assert set(c.security.node_keys) == {IPv6Address(d.mn.address)}
    prefs = [c.preference for c in configs]
    assert prefs == sorted(prefs, reverse=True) and len(set(prefs)) == 3
    if kind == "shared-home-link":
        assert all(c.discovery.name == "link" and c.home_interface == "eth0" for c in configs)
        assert all(c.authorised == (IPv6Network("2001:db8:1::/64"),) for c in configs)
    elif kind == "separate-links":
        assert all(c.home_interface == "eth1" and c.haha_address != c.address
                   and c.transport.interfaces == ("eth0", "eth1") for c in configs)
        assert all(set(c.peers) == {IPv6Address(h.signalling) for h in d.has} - {c.haha_address}
                   for c in configs)
    else:
        assert all(c.home_interface is None and c.address == c.haha_address for c in configs)
    mn = load_mobile_node(d.mn.config)
    assert mn.care_of_address == IPv6Address("2001:db8:20::11")
    assert mn.home_agents[0] == IPv6Address(d.has[0].address) and len(mn.home_agents) == 3
    assert mn.backend.name == "tun" and mn.transport.kind == "raw"
    assert not topo.created


def test_mobile_router_configuration(tmp_path):
    """A mobile router in explicit mode registers its mobile network prefix, which every home
    agent authorises for it."""
    d = NetnsDeployment(topology.shared_home_link(n_has=2, tag="cfgtest"), tmp_path,
                        mobile_router=True)
    d.write()
    mr = load_mobile_node(d.mn.config)
    assert mr.mobile_router and mr.prefixes == (MOBILE_NETWORK,)
    for ha in d.has:
        assert load_home_agent(ha.config).mobile_routers == {mr.home_address: (MOBILE_NETWORK,)}


def test_separate_links_topology_joins_its_home_links():
    """Figure 4: ha1 shares home link 1 with the router, the others share home link 2, the two
    are joined at layer 2; HAHA addresses sit on per-HA transit links. Joins are checked."""
    t = topology.separate_links(n_has=3, tag="cfgtest")
    links = {lk.name: lk for lk in t.links}
    assert [m.node for m in links["home1"].members] == ["r", "ha1"]
    assert [m.node for m in links["home2"].members] == ["ha2", "ha3"]
    assert t.joins == [("home1", "home2")] and t.describe()["joins"] == [["home1", "home2"]]
    assert t.info["haha"]["ha2"] == "2001:db8:12::1" and t.info["has"]["ha2"] == "2001:db8:1::2"
    with pytest.raises(ValueError):
        t.join_links("home1", "home2")
    with pytest.raises(ValueError):
        t.join_links("home1", "t1")  # not bridged
    with pytest.raises(ValueError):
        t.join_links("home1", "nowhere")
    assert t.link_ns("home2").endswith("-Lhome2")
    with pytest.raises(KeyError):
        t.link_ns("t1")


def test_unknown_topology_kind_is_refused(tmp_path):
    """A topology without a known kind has no deployment."""
    t = topology.Topology("cfgtest")
    t.add_node("a")
    with pytest.raises(ValueError, match="no deployment"):
        NetnsDeployment(t, tmp_path)


def test_the_mobile_node_tunnel_can_be_chosen(tmp_path):
    """``mn_backend="netlink"`` gives the node ``backend = netlink`` (the kernel's ip6tnl, no
    [backend:tun] section) whatever the home agents use; the default stays ``tun``; an unknown
    one is refused before anything is written."""
    topo = topology.no_home_link(n_has=2, tag="cfgtest")
    d = NetnsDeployment(topo, tmp_path, backend="netlink", mn_backend="netlink")
    d.write()
    mn = load_mobile_node(d.mn.config)
    assert mn.backend.name == "netlink" and "backend:tun" not in open(d.mn.config).read()
    assert all(load_home_agent(ha.config).backend.name == "netlink" for ha in d.has)
    default = NetnsDeployment(topo, tmp_path / "default")
    default.write()
    assert load_mobile_node(default.mn.config).backend.name == "tun"
    with pytest.raises(ValueError, match="no mobile node tunnel 'kernel'"):
        NetnsDeployment(topo, tmp_path / "bad", mn_backend="kernel")
    assert not (tmp_path / "bad").exists()
