"""Tier 3 end to end: real ``twistd`` daemons in network namespaces, each configuration of draft 3.

For each topology of :mod:`haha.lab.topology` (shared home link, separate links joined at layer
2, no home link) three home agents (``twistd -n haha``: raw transport, the ``tun`` backend or,
on a kernel with ip6_tunnel (the stock-kernel tier), the ``netlink`` backend; ESP with keys
generated for the test) and one mobile node (``twistd -n haha-mn``: raw transport, ``tun``
backend, care-of address on the visited link) run in their namespaces
(:class:`haha.lab.deploy.NetnsDeployment`). Everything is observed from outside: the control
sockets (registration, copies, forwarding counters), the correspondent's ICMPv6 echo to the
mobile node's home address (:func:`haha.lab.ping.ping`), and ``tcpdump`` captures read by an
independent header walker (:mod:`haha.lab.capture`).

Each test: the home agents find each other and serve; the node registers with ha1 and ha2/ha3
hold copies; the correspondent's ping crosses the bidirectional tunnel and is answered; ha1 is
killed with SIGKILL; a survivor takes over, the node re-registers with ha2, and the ping works
again through ha2. (On the shared link ha2 is then stopped with SIGTERM: it drains the node to
ha3 and leaves nothing installed behind, nor does the node when it stops.) On the wire every
Mobility Header message (BU, BA, HASR, HELLO, BIU, BIA, BIR) is inside ESP (next header 50
after any Home Address option or type 2 routing header), and no node answers anything with
ICMPv6 Parameter Problem. Waits poll with deadlines.
"""

import subprocess
import time
from contextlib import contextmanager
from ipaddress import IPv6Address

import pytest

from haha.lab import topology
from haha.lab.capture import NH_DEST_OPTS, NH_ESP, NH_MH, NH_ROUTING, Capture, summarise
from haha.lab.deploy import MOBILE_NETWORK, NetnsDeployment
from haha.lab.ping import ping, unbound_source
from kernel_backends import BACKENDS_IN_TIER, tunnel_counts

pytestmark = [pytest.mark.netns, pytest.mark.process, pytest.mark.slow]

ICMP6_PARAMETER_PROBLEM = 4
CORRESPONDENT = IPv6Address("2001:db8:30::10")  # cn on its link (haha.lab.topology)


def status(d, name):
    return d.ask(name, "status") or {}


def forwarding(d, name):
    return d.ask(name, "forwarding") or {}


@contextmanager
def deployment(tmp_path, make, n_has=3, mobile_router=False, capture_links=(), **options):
    """Build the topology, write the daemons' files, prepare captures in router r and the
    mobile node (and on the bridged ``capture_links``); always kill the daemons, stop the
    captures and remove the namespaces. ``options`` go to :class:`NetnsDeployment`. Yields
    ``(deployment, captures)``; captures hold their packets afterwards."""
    topo = make(n_has=n_has, n_mns=1)
    d = NetnsDeployment(topo, tmp_path, mobile_router=mobile_router, **options)
    assert len(d.has[0].socket) < 100, "control socket path too long for AF_UNIX"
    captures = {}
    try:
        topo.create()
        d.write()
        # Router r sees HA-to-HA signalling off the shared link and everything to and from the
        # visited link; the node's own namespace sees its side again (a packet the kernel
        # fails to hand one capture is still seen by the other).
        captures["r"] = Capture(topo.ns("r"), tmp_path / "r.pcap")
        captures["mn"] = Capture(topo.ns("mn1"), tmp_path / "mn.pcap")
        for link in capture_links:
            captures[link] = Capture(topo.link_ns(link), tmp_path / f"{link}.pcap")
        yield d, captures
    finally:
        d.kill_all()
        for name, c in captures.items():
            c.packets_seen = c.stop()
            print(f"capture {name}: {c.report}")  # shown when the test fails
        topo.destroy()
    left = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
               .stdout.split()) & set(topo.namespaces())
    assert not left, f"namespaces left behind: {left}"


def start_home_agents(d, captures):
    """Start the home agents, then the captures. A home agent greets its peers as it starts,
    and the kernel of a peer whose daemon is not running yet (no nft guard) answers that ESP
    packet with Parameter Problem, as any host without haha would; so the wire is watched from
    the moment every daemon answers its control socket (its guard is installed by then)."""
    for ha in d.has:
        d.start(ha.name)
    for ha in d.has:
        d.wait_for(f"{ha.name} up", lambda ha=ha: status(d, ha.name), timeout=20)
    for c in captures.values():
        c.start()
    for ha in d.has:
        d.wait_for(f"{ha.name} serving", lambda ha=ha: status(d, ha.name).get("state") ==
                   "serving", timeout=20)
    # Every home agent knows every other one (RAs on the shared link, HELLO elsewhere).
    for ha in d.has:
        others = sorted(h.signalling for h in d.has if h is not ha)
        d.wait_for(f"{ha.name}'s peers", lambda ha=ha, others=others: sorted(
            p["address"] for p in d.ask(ha.name, "peers") or []) == others, timeout=10)


def register(d):
    """Start the mobile node; wait for its registration with ha1 and the copies."""
    first = d.has[0]
    d.start(d.mn.name)
    d.wait_for("registration with ha1", lambda: status(d, d.mn.name).get("home_agent") ==
               first.address, timeout=20)
    expected = {h.name: (first.signalling, h is not first) for h in d.has}
    d.wait_for("copies at every peer", lambda: d.primary_of(d.mn.address) == expected,
               timeout=10)


def fail_over(d):
    """SIGKILL ha1; wait for the node's re-registration with ha2 and the survivors' agreement.
    Returns the seconds from the kill to the re-registration."""
    first, second = d.has[0], d.has[1]
    killed = time.monotonic()
    d.kill(first.name)
    # HA lifetime + a HELLO/RA interval + the HASR/BU/BA round trip, with slack for a loaded
    # machine (the unprivileged process test measures the same path more tightly).
    d.wait_for("re-registration with ha2", lambda: status(d, d.mn.name).get("home_agent") ==
               second.address, timeout=d.lifetime + 15)
    took = time.monotonic() - killed
    expected = {h.name: (second.signalling, h is not second) for h in d.has[1:]}
    d.wait_for("the survivors' agreement", lambda: d.primary_of(d.mn.address) == expected,
               timeout=10)
    return took


def reach(d, target, through):
    """The correspondent's ping to ``target`` is answered, and ``through``'s backend both
    encapsulated (towards the node) and decapsulated (the reply) during it: the tun backend's
    own counters, or the kernel's counters of the netlink backend's ip6tnl links, which also
    leave the daemon no IPv6-in-IPv6 to handle (the guard lets it through to the kernel)."""
    before = forwarding(d, through)
    seen = _user_space_tunnelled(d, through)
    answered = ping(d.topology.ns("cn"), target, attempts=10, interval=0.5)
    after = forwarding(d, through)
    assert answered, (f"no echo reply from {target}", after, d.ask(d.mn.name, "counters"))
    assert after["name"] == d.backend
    for key, old, new in zip(("encapsulated", "decapsulated"), tunnel_counts(before),
                             tunnel_counts(after)):
        assert new > old, (key, through, before, after)
    if d.backend == "netlink":
        assert _user_space_tunnelled(d, through) == seen


def _user_space_tunnelled(d, name):
    """IPv6-in-IPv6 packets that reached the daemon (decapsulated or dropped for want of a
    user-space tunnel)."""
    c = d.ask(name, "counters")
    return c.get("tunnelled-in", 0) + c.get("dropped.tunnel-without-backend", 0)


def installed(d, node):
    """What haha may have installed in ``node``'s namespace: nft tables, proxy neighbour
    entries, TUN devices, policy rules, routes into a TUN or unreachable, proxy_ndp sysctls."""
    run = d.topology.run
    out = {
        "nft": run(node, ["nft", "list", "tables"]).stdout.split(),
        "proxy": run(node, ["ip", "-6", "neigh", "show", "proxy"]).stdout.split(),
        "links": [line.split()[1] for line in run(node, ["ip", "-o", "link"]).stdout
                  .splitlines() if line.split()[1].startswith("haha")],
        "rules": [line for line in run(node, ["ip", "-6", "rule"]).stdout.splitlines()
                  if "lookup local" not in line and "lookup main" not in line
                  and "lookup default" not in line],
        "routes": [line for line in run(node, ["ip", "-6", "route", "show", "table", "all"])
                   .stdout.splitlines() if "haha" in line or "unreachable" in line],
        "proxy_ndp": [line for line in run(node, ["sysctl", "-a"]).stdout.splitlines()
                      if "proxy_ndp = 1" in line],
    }
    return {k: v for k, v in out.items() if v}


def brief(seen):
    return (f"{seen.src} -> {seen.dst} headers {seen.headers} upper {seen.upper}"
            + (f" icmp {seen.icmp_type}/{seen.icmp_code}" if seen.icmp_type is not None else ""))


def check_wire(d, packets):
    """Every Mobility Header message is inside ESP; BUs carry a Home Address option before
    ESP, BAs and HASRs a type 2 routing header; HA-to-HA signalling is ESP; nobody sent an
    ICMPv6 Parameter Problem."""
    seen = [summarise(p) for p in packets]
    assert seen, "the capture saw nothing"
    clear = [brief(s) for s in seen if s.upper == NH_MH]
    assert not clear, f"Mobility Header in the clear: {clear[:3]}"
    problems = [brief(s) for s in seen if s.icmp_type == ICMP6_PARAMETER_PROBLEM]
    assert not problems, f"ICMPv6 Parameter Problem on the wire: {problems[:3]}"
    hoa, coa = IPv6Address(d.mn.address), d.care_of
    for ha in d.has[:2]:  # ha1 (first registration) and ha2 (after the failover)
        address = IPv6Address(ha.address)
        bus = [s for s in seen if (s.src, s.dst) == (coa, address) and s.upper == NH_ESP]
        assert bus and all(s.headers == (NH_DEST_OPTS,) and s.home_address == hoa
                           for s in bus), (ha.name, [brief(s) for s in bus[:3]])
        bas = [s for s in seen if (s.src, s.dst) == (address, coa) and s.upper == NH_ESP]
        assert bas and all(s.headers == (NH_ROUTING,) and s.routing_type2 == hoa
                           for s in bas), (ha.name, [brief(s) for s in bas[:3]])
    signalling = {IPv6Address(h.signalling) for h in d.has}
    between = [s for s in seen if s.src in signalling and s.dst in signalling]
    assert {s.upper for s in between} <= {NH_ESP, 58}, [brief(s) for s in between[:3]]
    assert sum(s.upper == NH_ESP for s in between) >= 4, "no HA-to-HA ESP seen"


def check_counters(d):
    """The daemons sent their signalling as the wire shows, and nothing failed inside."""
    for n in d.has[1:] + [d.mn]:
        c = d.ask(n.name, "counters")
        for key in ("core-failed", "effect-failed", "tunnel-failed"):
            assert not c.get(key), (n.name, key, c)
    mn = d.ask(d.mn.name, "counters")
    assert mn.get("sent.BindingUpdate", 0) >= 2 and mn.get("received.BindingAck", 0) >= 2


@pytest.mark.parametrize("backend", BACKENDS_IN_TIER)
def test_shared_home_link(tmp_path, require_root, backend):
    """Draft 3.1 Figure 1: three HAs on one home link are proposed to each other by Router
    Advertisements and live by their ESP-protected HELLOs, the primary intercepts by proxy ND,
    and after ha1's SIGKILL ha2 takes the node over, proxies its home address (unsolicited NA)
    and carries the ping. The node's applications that bind no address send from the home
    address through the tunnel."""
    with deployment(tmp_path, topology.shared_home_link, capture_links=("home",),
                    backend=backend) as (d, caps):
        start_home_agents(d, caps)
        register(d)
        assert forwarding(d, "ha1")["proxy_nd"] == [[d.mn.address, "eth0"]]
        reach(d, d.mn.address, through="ha1")
        # An application on the node that binds no address sends from the home address,
        # through the tunnel (ha1 decapsulates it), not from the care-of address.
        before = tunnel_counts(forwarding(d, "ha1"))[1]
        assert unbound_source(d.topology.ns(d.mn.name), d.topology.ns("cn"),
                              CORRESPONDENT) == IPv6Address(d.mn.address)
        assert tunnel_counts(forwarding(d, "ha1"))[1] > before
        took = fail_over(d)
        assert took < d.lifetime + 15
        ha2 = forwarding(d, "ha2")
        assert ha2["proxy_nd"] == [[d.mn.address, "eth0"]]
        assert ha2["counters"].get("unsolicited_na", 0) >= 1
        reach(d, d.mn.address, through="ha2")
        check_counters(d)
        counters = d.ask("ha2", "counters")
        assert counters.get("received.RouterAdvertisement", 0) >= 2
        # Peers live only by protected HELLO, on the shared link too (RAs only propose them).
        assert counters.get("sent.HaHello", 0) >= 2
        # SIGTERM: ha2 drains its node to ha3 (HASR), says goodbye and removes everything it
        # installed; ha3 then carries the ping. The node's own stop cleans up after it too.
        assert installed(d, "ha2").keys() >= {"nft", "proxy", "links", "routes", "proxy_ndp"}
        d.stop("ha2")
        d.wait_for("drain to ha3", lambda: status(d, d.mn.name).get("home_agent") ==
                   d.has[2].address, timeout=10)
        assert d.node("ha2").process.returncode in (0, -15)
        assert installed(d, "ha2") == {}
        reach(d, d.mn.address, through="ha3")
        assert installed(d, d.mn.name).keys() >= {"nft", "links", "rules", "routes"}
        d.stop(d.mn.name)
        assert installed(d, d.mn.name) == {}
    check_wire(d, caps["r"].packets_seen + caps["mn"].packets_seen + caps["home"].packets_seen)


@pytest.mark.parametrize("backend", BACKENDS_IN_TIER)
def test_separate_links(tmp_path, require_root, backend):
    """Draft 3.1 Figure 4: HAs on two home links joined at layer 2, signalling with HELLO
    between HAHA addresses across router r; the primary's proxy ND reaches r across the join,
    before and after ha1's SIGKILL."""
    with deployment(tmp_path, topology.separate_links, backend=backend) as (d, caps):
        start_home_agents(d, caps)
        register(d)
        reach(d, d.mn.address, through="ha1")
        fail_over(d)
        assert forwarding(d, "ha2")["proxy_nd"] == [[d.mn.address, "eth1"]]
        reach(d, d.mn.address, through="ha2")
        check_counters(d)
        assert d.ask("ha2", "counters").get("sent.HaHello", 0) >= 2
    check_wire(d, caps["r"].packets_seen + caps["mn"].packets_seen)


@pytest.mark.parametrize("backend", BACKENDS_IN_TIER)
def test_no_home_link(tmp_path, require_root, backend):
    """Draft 3.2 Figure 5: no home link; every HA advertises the home prefix and forwards from
    its copies. With r's route pointing at the copy holder ha2 the ping still reaches the node
    (forwarding from a Binding Cache Copy; the reply returns through the primary's reverse
    tunnel); after ha1's SIGKILL the route follows the surviving advertisers and the node's new
    primary."""
    with deployment(tmp_path, topology.no_home_link, backend=backend) as (d, caps):
        start_home_agents(d, caps)
        register(d)
        for ha in d.has:
            assert forwarding(d, ha.name)["prefixes"] == [str(d.home_prefix)]
            assert forwarding(d, ha.name)["proxy_nd"] == []
        assert d.route_prefix(via=["ha2"]) == ["ha2"]
        copy_route = forwarding(d, "ha2")["routes"]
        assert [(r["home_address"], r["primary"]) for r in copy_route] == [(d.mn.address, False)]
        before, _ = tunnel_counts(forwarding(d, "ha2"))
        assert ping(d.topology.ns("cn"), d.mn.address, attempts=10, interval=0.5)
        assert tunnel_counts(forwarding(d, "ha2"))[0] > before
        assert d.route_prefix(via=["ha1"]) == ["ha1"]
        reach(d, d.mn.address, through="ha1")
        fail_over(d)
        assert d.route_prefix() == ["ha2", "ha3"]
        assert d.route_prefix(via=["ha2"]) == ["ha2"]
        reach(d, d.mn.address, through="ha2")
        check_counters(d)
        assert d.ask("ha2", "counters").get("sent.HaHello", 0) >= 2
    check_wire(d, caps["r"].packets_seen + caps["mn"].packets_seen)


@pytest.mark.parametrize("backend", BACKENDS_IN_TIER)
def test_nemo_mobile_router_explicit_mode(tmp_path, require_root, backend):
    """A NEMO mobile router (RFC 3963, explicit mode: its BU carries the Mobile Network Prefix
    option) registers 2001:db8:100::/48; the correspondent reaches 2001:db8:100::1, an address
    inside that prefix on the router, through the tunnel, before and after ha1's SIGKILL.
    Router r routes the prefix to the router's home address on the home link, where the
    primary home agent answers for it (proxy ND) and routes the prefix into its tunnel."""
    with deployment(tmp_path, topology.shared_home_link, n_has=2, mobile_router=True,
                    capture_links=("home",), backend=backend) as (d, caps):
        host = d.add_mobile_network_host()
        d.topology.run("r", ["ip", "-6", "route", "replace", str(MOBILE_NETWORK), "via",
                             d.mn.address])
        start_home_agents(d, caps)
        register(d)
        for ha in d.has:
            (binding,) = d.ask(ha.name, "bindings")
            assert binding["prefixes"] == [str(MOBILE_NETWORK)]
        assert status(d, d.mn.name)["role"] == "mobile-router"
        assert f"{MOBILE_NETWORK}" in forwarding(d, "ha1")["kernel_routes"]
        reach(d, host, through="ha1")
        fail_over(d)
        assert f"{MOBILE_NETWORK}" in forwarding(d, "ha2")["kernel_routes"]
        reach(d, host, through="ha2")
        check_counters(d)
    check_wire(d, caps["r"].packets_seen + caps["mn"].packets_seen + caps["home"].packets_seen)
