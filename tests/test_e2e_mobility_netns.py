"""Tier 3 end to end: a mobile node that moves, and one that comes home (real ``twistd`` daemons
in network namespaces, as in ``test_e2e_netns.py``: raw transport, ``tun`` backend, ESP).

Movement (RFC 6275 11.7.1): on the shared home link topology with a second visited link
2001:db8:21::/64 behind router r, the node's interface is carried from the first visited link to
the second (:meth:`haha.lab.topology.Topology.move_interface`), the node takes its new address
and default route there, and the operator tells the daemon through its control socket
(``haha-ctl ... move care-of=ADDRESS``). The node re-registers with ha1 from the new care-of
address; ha1's binding and the copies at ha2/ha3 name it; the correspondent's ping goes
through the tunnel to the new address, and no tunnelled packet goes to the old one any more
(watched at r, which every packet towards either address crosses).

Returning home (RFC 6275 11.5.4, docs/protocol.md 9): the node's interface is carried onto the home
link. As deployed nodes do first, a DAD probe for the home address (source ::) is sent there and
ha1 defends it by proxy ND. The node takes its home address on the interface and ``haha-ctl
... home`` makes it deregister from the home address with lifetime 0: every home agent deletes
the binding, ha1 stops proxying (no proxy entry left in its kernel), the node announces its
home address (unsolicited NA with Override), and the correspondent reaches it directly on the
home link: r's neighbour entry names the node's own link-layer address and ha1 tunnels
nothing.
"""

import os
import subprocess
import sys
from ipaddress import IPv6Address, IPv6Network

import pytest
from kernel_backends import BACKENDS, tunnel_counts
from test_e2e_netns import deployment, forwarding, reach, register, start_home_agents, status

from haha.lab import topology
from haha.lab.capture import NH_DEST_OPTS, NH_ESP, NH_ICMPV6, NH_IPV6, NH_MH, Capture, summarise
from haha.lab.ping import dad_probe, ping
from haha.lab.timing import scaled

pytestmark = [pytest.mark.netns, pytest.mark.process, pytest.mark.slow]

VISITED2 = IPv6Network("2001:db8:21::/64")
NEW_CARE_OF = VISITED2[0x11]
ROUTER2 = VISITED2[0xff]
ROUTER_HOME = topology.HOME_PREFIX[0xff]
ICMP6_PARAMETER_PROBLEM = 4


def haha_ctl(node, *argv):
    """Run the real ``haha-ctl`` against ``node``'s control socket; return its output."""
    script = os.path.join(os.path.dirname(sys.executable), "haha-ctl")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "haha.control.cli"]
    done = subprocess.run(cmd + ["--socket", node.socket, "--json", *argv], capture_output=True,
                          text=True, timeout=scaled(30))
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def with_second_visited_link(n_has, n_mns):
    """The shared home link topology plus a bridged visited link 2001:db8:21::/64 on r."""
    t = topology.shared_home_link(n_has=n_has, n_mns=n_mns)
    t.add_link("visit2", ("r", "eth3", [f"{ROUTER2}/64"]), bridge=True)
    return t


def mac_of(d, node, ifname):
    out = d.topology.run(node, ["ip", "-o", "link", "show", ifname]).stdout
    return out.split("link/ether ")[1].split()[0]


def copies(d):
    """{ha name: (care-of, primary)} of the node's binding as each home agent reports it."""
    out = {}
    for ha in d.has:
        for b in d.ask(ha.name, "bindings") or []:
            if b["home_address"] == d.mn.address:
                out[ha.name] = (b["care_of"], b["primary"])
    return out


def check_signalling(packets, hoa, care_of, ha):
    """Every Mobility Header message was inside ESP, nobody answered with Parameter Problem,
    and the Binding Updates from ``care_of`` carried the Home Address option."""
    seen = [summarise(p) for p in packets]
    assert not [s for s in seen if s.upper == NH_MH], "Mobility Header in the clear"
    assert not [s for s in seen if s.icmp_type == ICMP6_PARAMETER_PROBLEM]
    bus = [s for s in seen if (s.src, s.dst) == (care_of, ha) and s.upper == NH_ESP]
    assert bus and all(s.headers == (NH_DEST_OPTS,) and s.home_address == hoa for s in bus)


@pytest.mark.parametrize("backend", BACKENDS)
def test_movement_to_another_visited_link(tmp_path, require_root, backend):
    """The node moves from 2001:db8:20::11 to 2001:db8:21::11 and says so through haha-ctl:
    it re-registers with ha1 from there, ha1's binding and ha2/ha3's copies show the new
    care-of address, the correspondent's ping follows the tunnel to it, and r sees tunnelled
    packets for the new address only."""
    with deployment(tmp_path, with_second_visited_link, backend=backend) as (d, caps):
        start_home_agents(d, caps)
        register(d)
        reach(d, d.mn.address, through="ha1")
        old, hoa, ha1 = d.care_of, IPv6Address(d.mn.address), IPv6Address(d.has[0].address)
        assert copies(d) == {h.name: (str(old), str(ha1)) for h in d.has}
        sequence = d.ask(d.mn.name, "bindings")[0]["sequence"]

        t = d.topology
        t.move_interface("mn1", "eth0", "visit2")
        t.run("mn1", ["ip", "-6", "addr", "del", f"{old}/64", "dev", "eth0"])
        t.run("mn1", ["ip", "-6", "addr", "add", f"{NEW_CARE_OF}/64", "dev", "eth0", "nodad"])
        t.run("mn1", ["ip", "-6", "route", "replace", "default", "via", str(ROUTER2), "dev",
                      "eth0"])
        assert f'"care_of": "{NEW_CARE_OF}"' in haha_ctl(d.mn, "move",
                                                         f"care-of={NEW_CARE_OF}")
        d.wait_for("re-registration from the new care-of address", lambda: status(
            d, d.mn.name).get("care_of") == str(NEW_CARE_OF) and status(
            d, d.mn.name).get("state") == "registered", timeout=15)
        assert status(d, d.mn.name)["home_agent"] == str(ha1)
        assert d.ask(d.mn.name, "bindings")[0]["sequence"] != sequence
        d.wait_for("the new care-of address at every home agent", lambda: copies(d) == {
            h.name: (str(NEW_CARE_OF), str(ha1)) for h in d.has}, timeout=10)
        (route,) = forwarding(d, "ha1")["routes"]
        assert route["care_of"] == str(NEW_CARE_OF)

        after = Capture(t.ns("r"), tmp_path / "r-after-move.pcap")
        after.start()
        try:
            reach(d, d.mn.address, through="ha1")
        finally:
            seen = [summarise(p) for p in after.stop()]
        tunnelled = [s for s in seen if s.upper == NH_IPV6]
        assert any((s.src, s.dst) == (ha1, NEW_CARE_OF) for s in tunnelled), tunnelled
        assert any((s.src, s.dst) == (NEW_CARE_OF, ha1) for s in tunnelled), tunnelled
        assert not [s for s in seen if old in (s.src, s.dst)], "traffic for the old address"
        counters = d.ask(d.mn.name, "counters")
        assert counters.get("core-failed", 0) == 0 and counters.get("effect-failed", 0) == 0
    packets = caps["r"].packets_seen + caps["mn"].packets_seen
    check_signalling(packets, hoa, NEW_CARE_OF, ha1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_returning_home(tmp_path, require_root, backend):
    """The node is carried onto the home link: ha1 defends its home address against a DAD
    probe; after ``haha-ctl home`` every home agent has deleted the binding, ha1 proxies
    nothing (its kernel neither), and the correspondent's ping reaches the node on the home
    link through r's neighbour entry for the node's own link-layer address, not ha1's."""
    with deployment(tmp_path, topology.shared_home_link, capture_links=("home",),
                    backend=backend) as (d, caps):
        start_home_agents(d, caps)
        register(d)
        reach(d, d.mn.address, through="ha1")
        hoa = IPv6Address(d.mn.address)
        t = d.topology
        ha1_mac = mac_of(d, "ha1", "eth0")

        t.move_interface("mn1", "eth0", "home")
        t.run("mn1", ["ip", "-6", "addr", "del", f"{d.care_of}/64", "dev", "eth0"])
        # What a deployed node does first (docs/protocol.md 9): the primary must defend the address.
        defences = dad_probe(t.ns("mn1"), "eth0", hoa, timeout=5)
        assert [(str(lladdr.hex(":")) if lladdr else None) for _, _, lladdr in defences] == [
            ha1_mac], defences

        t.run("mn1", ["ip", "-6", "addr", "add", f"{hoa}/64", "dev", "eth0", "nodad"])
        t.run("mn1", ["ip", "-6", "route", "replace", "default", "via", str(ROUTER_HOME), "dev",
                      "eth0"])
        assert '"state": "deregistering"' in haha_ctl(d.mn, "home")
        d.wait_for("back home", lambda: status(d, d.mn.name).get("state") == "home",
                   timeout=15)
        d.wait_for("the binding deleted at every home agent", lambda: all(
            d.ask(h.name, "bindings") == [] for h in d.has), timeout=10)
        assert forwarding(d, "ha1")["proxy_nd"] == [] and forwarding(d, "ha1")["routes"] == []
        assert t.run("ha1", ["ip", "-6", "neigh", "show", "proxy"]).stdout.strip() == ""
        mn = d.ask(d.mn.name, "counters")
        assert mn.get("home-na-sent") == 1 and mn.get("received.BindingAck", 0) >= 2

        before = tunnel_counts(forwarding(d, "ha1"))
        assert ping(t.ns("cn"), hoa, attempts=10, interval=0.5)
        after = forwarding(d, "ha1")
        assert tunnel_counts(after) == before and not after.get("tunnels"), (before, after)
        neigh = t.run("r", ["ip", "-6", "neigh", "show", str(hoa), "dev", "eth0"]).stdout
        assert f"lladdr {mac_of(d, 'mn1', 'eth0')}" in neigh, (neigh, ha1_mac)
    # The deregistration left from the home address without a Home Address option, in ESP,
    # and the node's Neighbour Advertisement for it went to all-nodes. (The node's own capture
    # too: a bridge's capture sees each frame once per port and may drop some under load.)
    seen = [summarise(p) for p in caps["home"].packets_seen + caps["mn"].packets_seen]
    dereg = [s for s in seen if s.src == hoa and s.dst == IPv6Address(d.has[0].address)
             and s.upper == NH_ESP]
    assert dereg and all(s.home_address is None for s in dereg)
    assert [s for s in seen if s.src.is_link_local and s.dst == IPv6Address("ff02::1")
            and s.upper == NH_ICMPV6 and s.icmp_type == 136 and s.payload[8:24] == hoa.packed]
    assert not [s for s in seen if s.upper == NH_MH]
