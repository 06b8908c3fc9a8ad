"""haha.lab: topologies described as data, built in network namespaces, pinged across, torn
down (tier 3 for the building; the description checks are pure)."""

import os
import subprocess

import pytest

from haha.lab import topology
from haha.lab.ping import ping
from haha.lab.topology import Topology


def _namespaces():
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
               .stdout.split())


def test_description_is_checked():
    """Unknown nodes, duplicate names, one-member links and long interface names are refused;
    names are unique per topology and tagged with the process."""
    t = Topology()
    t.add_node("a").add_node("b")
    with pytest.raises(ValueError):
        t.add_node("a")
    with pytest.raises(ValueError):
        t.add_link("l", ("a", "eth0", []), ("zz", "eth0", []))
    with pytest.raises(ValueError):
        t.add_link("l", ("a", "eth0", []))
    with pytest.raises(ValueError):
        t.add_link("l", ("a", "x" * 16, []), ("b", "eth0", []))
    with pytest.raises(ValueError):
        t.add_route("zz", "default", via="2001:db8::1")
    t.add_link("l", ("a", "eth0", ["2001:db8::1/64"]), ("b", "eth0", ["2001:db8::2/64"]))
    with pytest.raises(ValueError):
        t.add_link("l", ("a", "eth1", []), ("b", "eth1", []))
    other = Topology().add_node("a")
    assert t.ns("a") != other.ns("a") and str(os.getpid()) in t.ns("a")
    assert str(t.address("b")) == "2001:db8::2"
    d = topology.shared_home_link(n_has=3, n_mns=2).describe()
    assert d["info"]["kind"] == "shared-home-link" and len(d["nodes"]) == 7


@pytest.mark.netns
@pytest.mark.parametrize("kind", sorted(topology.TOPOLOGIES))
def test_each_topology_builds_pings_and_tears_down(kind, require_root):
    """Every standard topology comes up (two HAs, two mobile nodes), each HA and mobile node
    reaches the correspondent, the correspondent reaches each HA, and destroy() leaves no
    namespace behind; building it twice with the same tag replaces the leftovers."""
    t = topology.TOPOLOGIES[kind](n_has=2, n_mns=2)
    try:
        t.create()
        t.create()  # idempotent: leftovers of the same names are removed first
        cn = t.info["cn"]
        for node in ("ha1", "ha2", "mn1", "mn2"):
            assert ping(t.ns(node), cn, attempts=6, interval=0.5), f"{node} -> cn"
        for ha, addr in t.info["has"].items():
            assert ping(t.ns("cn"), addr, attempts=6, interval=0.5), f"cn -> {ha}"
        assert set(t.namespaces()) <= _namespaces()
    finally:
        t.destroy()
    assert not set(t.namespaces()) & _namespaces()


@pytest.mark.netns
def test_shared_link_is_one_broadcast_domain_and_sysctls_apply(require_root):
    """On the shared home link the HAs reach each other directly (link-local, one bridge), and
    node sysctls (forwarding) are set inside the namespaces only."""
    with topology.shared_home_link(n_has=2, n_mns=1) as t:
        ll = t.run("ha2", ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"])
        addr = ll.stdout.split()[3].split("/")[0]
        assert ping(t.ns("ha1"), addr, interface="eth0", attempts=6, interval=0.5)
        assert topology.read_sysctl(t.ns("ha1"), "net.ipv6.conf.all.forwarding") == "1"
        assert topology.read_sysctl(t.ns("cn"), "net.ipv6.conf.all.forwarding") == "0"
    assert not set(t.namespaces()) & _namespaces()


@pytest.mark.netns
def test_cli_up_ping_down(require_root, capsys):
    """haha-lab up builds a tagged topology and prints it as JSON, ping reaches the
    correspondent from a mobile node, down removes every namespace."""
    import json

    from haha.lab.cli import main

    tag = f"cli{os.getpid()}"
    try:
        assert main(["up", "no-home-link", "--tag", tag, "--has", "1"]) == 0
        described = json.loads(capsys.readouterr().out)
        assert described["nodes"]["cn"] == f"haha-{tag}-cn"
        assert main(["ping", "no-home-link", "mn1", "2001:db8:30::10", "--tag", tag]) == 0
    finally:
        assert main(["down", "no-home-link", "--tag", tag, "--has", "1"]) == 0
    assert not {n for n in _namespaces() if n.startswith(f"haha-{tag}-")}
