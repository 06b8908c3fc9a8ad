"""Tier 3 on a stock kernel: a mobile node whose tunnel is the kernel's (``backend = netlink``)
with home agents whose forwarding is the kernel's too (real ``twistd`` daemons in network
namespaces, as in ``test_e2e_netns.py``; shared home link plus a second visited link, as in
``test_e2e_mobility_netns.py``).

The node registers with ha1; its ip6tnl links (care-of -> ha1 holding the home address,
care-of -> ha2 receive-only) exist in its namespace; the correspondent's ping and a TCP
transfer in both directions (one connection the correspondent opens to the home address and
gets echoed back, one the node opens from an unbound socket, steered to the home address)
cross the two kernel tunnels, whose kernel counters rise while neither daemon handles a single
IPv6-in-IPv6 packet. Then the node moves to 2001:db8:21::11: new links from there, none from
the old address, and ping and TCP work again. A ``kill -9`` of the node leaves its links and
rules in the kernel; the next run removes them and registers again; a clean stop leaves
nothing. Needs ``ip6_tunnel``: deselected on this project's kernel, run by the stock-kernel
tier (``./dev stock-kernel -k mn_kernel``).

A NEMO mobile router with the kernel tunnel (RFC 3963, explicit mode): the correspondent
reaches an address inside its mobile network prefix through the kernel links (the rule from
the prefix sends the replies into the tunnel), before and after ha1's ``kill -9``, after which
the router's home address and default route move to its link to ha2, which existed already
to receive.
"""

import subprocess
import sys
from ipaddress import IPv6Address

import pytest
from test_e2e_mobility_netns import NEW_CARE_OF, ROUTER2, haha_ctl, with_second_visited_link
from test_e2e_netns import (CORRESPONDENT, deployment, fail_over, installed, reach, register,
                            start_home_agents, status)

from haha.lab import topology
from haha.lab.deploy import MOBILE_NETWORK
from haha.lab.timing import scaled

# The first test is in the tier's default selection (CI); the NEMO one runs in the full tier
# (``./dev stock-kernel -m "stock_kernel or ip6_tunnel"``), which keeps CI within its budget.
pytestmark = [pytest.mark.netns, pytest.mark.process, pytest.mark.slow, pytest.mark.ip6_tunnel]

PORT = 5301
#: Octets each TCP direction carries (the kernel's data path: fast even under emulation).
VOLUME = 1 << 20

ECHO_SERVER = r"""
import socket, sys
address, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((address, port)); s.listen(1)
print("ready", flush=True)
c, peer = s.accept(); data = bytearray()
while True:
    chunk = c.recv(1 << 16)
    if not chunk:
        break
    data += chunk
c.sendall(bytes(reversed(data))); c.close()
print(peer[0], len(data), flush=True)
"""

ECHO_CLIENT = r"""
import os, socket, sys
address, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = os.urandom(n)
c = socket.create_connection((address, port), timeout=60)
c.sendall(payload); c.shutdown(socket.SHUT_WR); back = bytearray()
while True:
    chunk = c.recv(1 << 16)
    if not chunk:
        break
    back += chunk
print("intact" if bytes(back) == payload[::-1] else f"damaged {len(back)}", c.getsockname()[0],
      flush=True)
"""


def transfer(d, server, client, address):
    """A TCP connection from ``client``'s namespace to ``address`` (served in ``server``'s):
    VOLUME octets there and back reversed. Returns (what the client says, the source address
    the server saw)."""
    topo = d.topology
    rx = topo.popen(server, [sys.executable, "-c", ECHO_SERVER, str(address), str(PORT)],
                    stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "ready"
        done = topo.run(client, [sys.executable, "-c", ECHO_CLIENT, str(address), str(PORT),
                                 str(VOLUME)])
        out, _ = rx.communicate(timeout=scaled(60))
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    peer, length = out.split()
    assert int(length) == VOLUME, out
    return done.stdout.split()[0], IPv6Address(peer)


def node_tunnel(d):
    return d.ask(d.mn.name, "tunnel") or {}


def node_packets(d):
    """(encapsulated, decapsulated) summed over the node's kernel links."""
    packets = node_tunnel(d).get("tunnel_packets", {}).values()
    return (sum(p["encapsulated"] for p in packets), sum(p["decapsulated"] for p in packets))


def node_user_space_tunnelled(d):
    c = d.ask(d.mn.name, "counters")
    return c.get("tunnelled-in", 0) + c.get("dropped.tunnel-without-backend", 0)


def kernel_links(d):
    """{name: "local -> remote"} of the ip6tnl links in the node's namespace (but ip6tnl0)."""
    out = {}
    for line in d.topology.run("mn1", ["ip", "-6", "tunnel", "show"]).stdout.splitlines():
        name = line.split(":")[0].strip()
        if name == "ip6tnl0":
            continue
        words = line.split()
        out[name] = f"{words[words.index('local') + 1]} -> {words[words.index('remote') + 1]}"
    return out


def both_ways(d, care_of, ha):
    """Ping and TCP both ways through the kernel tunnels at ``care_of``, registered with
    ``ha``: the node's kernel counters rise, no IPv6-in-IPv6 reaches its daemon."""
    hoa = IPv6Address(d.mn.address)
    before = node_packets(d)
    reach(d, d.mn.address, through=ha)  # the home agent's kernel tunnel counters rise
    verdict, seen = transfer(d, "mn1", "cn", hoa)  # correspondent -> home address, echoed
    assert (verdict, seen) == ("intact", CORRESPONDENT)
    verdict, seen = transfer(d, "cn", "mn1", CORRESPONDENT)  # node -> correspondent
    assert (verdict, seen) == ("intact", hoa), "the node's unbound socket was not steered"
    after = node_packets(d)
    # TCP segments cross the tunnel as GSO packets of up to 64 KiB (the link counts those):
    # each way carried VOLUME octets twice (there and echoed back), so at least this many.
    least = 2 * VOLUME // 65536
    assert after[0] >= before[0] + least and after[1] >= before[1] + least, (
        before, after, node_tunnel(d))
    assert node_user_space_tunnelled(d) == 0
    links = kernel_links(d)
    ha_address = next(h.address for h in d.has if h.name == ha)
    assert f"{care_of} -> {ha_address}" in links.values(), links
    assert all(v.startswith(f"{care_of} ->") for v in links.values()), links


@pytest.mark.stock_kernel
def test_a_mobile_node_with_a_kernel_tunnel_through_kernel_home_agents(tmp_path, require_root):
    """Ping and TCP both ways between a correspondent and the home address of a node that
    tunnels in the kernel, through home agents that do too; again after a move to a new
    care-of address; a killed node's links are reclaimed by the next run; a clean stop leaves
    nothing in the node's namespace."""
    with deployment(tmp_path, with_second_visited_link, n_has=2, backend="netlink",
                    mn_backend="netlink") as (d, caps):
        start_home_agents(d, caps)
        first = d.has[0]
        d.start(d.mn.name)
        d.wait_for("registration with ha1", lambda: status(d, d.mn.name).get("home_agent") ==
                   first.address, timeout=30)
        tunnel = node_tunnel(d)
        assert tunnel["name"] == "netlink" and tunnel["care_of"] == str(d.care_of)
        assert sorted(tunnel["tunnels"].values()) == sorted(
            [str(d.care_of), h.address] for h in d.has)
        device = tunnel["device"]
        addresses = d.topology.run("mn1", ["ip", "-6", "addr", "show", "dev", device]).stdout
        assert f"{d.mn.address}/128" in addresses
        both_ways(d, d.care_of, "ha1")

        # The node moves to the second visited link.
        t = d.topology
        old = d.care_of
        t.move_interface("mn1", "eth0", "visit2")
        t.run("mn1", ["ip", "-6", "addr", "del", f"{old}/64", "dev", "eth0"])
        t.run("mn1", ["ip", "-6", "addr", "add", f"{NEW_CARE_OF}/64", "dev", "eth0", "nodad"])
        t.run("mn1", ["ip", "-6", "route", "replace", "default", "via", str(ROUTER2), "dev",
                      "eth0"])
        haha_ctl(d.mn, "move", f"care-of={NEW_CARE_OF}")
        d.wait_for("re-registration from the new care-of address", lambda: node_tunnel(d).get(
            "care_of") == str(NEW_CARE_OF) and status(d, d.mn.name).get("state") ==
            "registered", timeout=30)
        d.wait_for("ha1's binding at the new address", lambda: [
            r["care_of"] for r in (d.ask("ha1", "forwarding") or {}).get("routes", [])] ==
            [str(NEW_CARE_OF)], timeout=15)
        both_ways(d, NEW_CARE_OF, "ha1")
        assert not [v for v in kernel_links(d).values() if str(old) in v]

        # kill -9: the links and rules stay in the kernel; the next run removes them.
        d.kill(d.mn.name)
        assert len(kernel_links(d)) == 2
        with open(d.mn.config) as f:  # the next run starts where the node is now
            text = f.read().replace(f"care-of-address = {old}\n",
                                    f"care-of-address = {NEW_CARE_OF}\n")
        with open(d.mn.config, "w") as f:
            f.write(text)
        d.start(d.mn.name)
        d.wait_for("registration after the restart", lambda: status(d, d.mn.name).get(
            "state") == "registered", timeout=30)
        assert node_tunnel(d)["counters"].get("leftovers_removed", 0) >= 2
        assert len(kernel_links(d)) == 2
        reach(d, d.mn.address, through="ha1")

        d.stop(d.mn.name)
        assert kernel_links(d) == {}
        left = installed(d, "mn1")
        assert not left.get("links") and not left.get("rules"), left


def test_a_nemo_mobile_router_with_a_kernel_tunnel_through_a_failover(tmp_path, require_root):
    """A mobile router with ``backend = netlink`` registers 2001:db8:100::/48: a rule from the
    prefix leads into its table; the correspondent's ping to 2001:db8:100::1 crosses the
    router's kernel links (their counters rise, its daemon sees no IPv6-in-IPv6) through ha1,
    and after ha1's SIGKILL through ha2, whose link (until then receive-only) now holds the
    home address and the table's default route."""
    with deployment(tmp_path, topology.shared_home_link, n_has=2, mobile_router=True,
                    backend="netlink", mn_backend="netlink") as (d, caps):
        host = d.add_mobile_network_host()
        d.topology.run("r", ["ip", "-6", "route", "replace", str(MOBILE_NETWORK), "via",
                             d.mn.address])
        start_home_agents(d, caps)
        register(d)
        rules = d.topology.run("mn1", ["ip", "-6", "rule"]).stdout
        assert f"from {MOBILE_NETWORK} lookup 19790 proto 72" in rules, rules
        tunnel = node_tunnel(d)
        assert tunnel["prefixes"] == [str(MOBILE_NETWORK)]
        links = {remote: name for name, (_, remote) in tunnel["tunnels"].items()}
        assert tunnel["device"] == links[d.has[0].address]
        before = node_packets(d)
        reach(d, host, through="ha1")
        middle = node_packets(d)
        assert middle[0] > before[0] and middle[1] > before[1], (before, middle)
        fail_over(d)
        d.wait_for("the tunnel follows ha2", lambda: node_tunnel(d).get("device") ==
                   links[d.has[1].address], timeout=15)
        addresses = d.topology.run("mn1", ["ip", "-6", "addr", "show", "dev",
                                           links[d.has[1].address]]).stdout
        assert f"{d.mn.address}/128" in addresses
        to_ha2 = links[d.has[1].address]
        middle = node_tunnel(d)["tunnel_packets"][to_ha2]
        reach(d, host, through="ha2")
        after = node_tunnel(d)["tunnel_packets"][to_ha2]
        assert after["encapsulated"] > middle["encapsulated"], (middle, after)
        assert after["decapsulated"] > middle["decapsulated"], (middle, after)
        assert node_user_space_tunnelled(d) == 0
