"""Tier 3 end to end: Dynamic Home Agent Address Discovery on real links (RFC 6275 10.5, 11.4.1).

The deployments of ``test_e2e_netns.py`` (real ``twistd`` home agents and a mobile node in
network namespaces: raw transport, ``tun`` backend, ESP), except that the mobile node is
configured without any home agent (``NetnsDeployment(dhaad=True)``): it sends a DHAAD request
to the Home-Agents anycast address of its home prefix (2001:db8:1::fdff:ffff:ffff:fffe) and
registers with the first address of the reply.

- Shared home link (draft 3.1 Figure 1): every home agent joins the anycast address on its home
  interface (``IPV6_JOIN_ANYCAST``), so its kernel answers router r's Neighbour Solicitation for
  it; one of them gets the request and answers with all three by preference.
- No home link (draft 3.2 Figure 5): the anycast address lies inside the home prefix, which r
  routes to a home agent advertising it; that one answers. Its kernel takes the request as
  local (the address is joined on ``lo``) instead of answering Destination Unreachable.

Then ha1 is killed: ha2 takes the node over with a HASR naming itself, which the node obeys at
once because the DHAAD reply made ha2 a known home agent (draft 6.1) and its ESP SAs derive from
the node's one secret (no second DHAAD); the killed daemon's anycast membership is gone with its
socket. Without a home link ha2 then drains with
``drain-mode = discover`` (a HASR naming nobody): the node runs DHAAD again, the draining ha2
answers with the others only, and the node moves to ha3. On the wire the DHAAD messages are
ICMPv6 144/145 in the clear (RFC 6275 policy), every Mobility Header message is in ESP, and no
home agent answered a request with an ICMPv6 error.
"""

from ipaddress import IPv6Address

import pytest
from kernel_backends import BACKENDS
from test_e2e_netns import (
    ICMP6_PARAMETER_PROBLEM,
    check_counters,
    check_wire,
    deployment,
    fail_over,
    forwarding,
    reach,
    register,
    start_home_agents,
    status,
)

from haha.core.homeagent import home_agents_anycast
from haha.lab import topology
from haha.lab.capture import NH_ICMPV6, summarise

pytestmark = [pytest.mark.netns, pytest.mark.process, pytest.mark.slow]

ICMP6_DHAAD_REQUEST, ICMP6_DHAAD_REPLY = 144, 145
ICMP6_DEST_UNREACH = 1


def kernel_anycast(d, node):
    """``{(address, interface)}`` of the kernel's anycast memberships in ``node``'s namespace
    (``/proc/net/anycast6``: index, interface, address in hex, users)."""
    out = set()
    for line in d.topology.run(node, ["cat", "/proc/net/anycast6"]).stdout.splitlines():
        index, interface, hexaddr, users = line.split()
        out.add((str(IPv6Address(bytes.fromhex(hexaddr))), interface))
    return out


def check_anycast_joined(d, interface):
    """Every home agent says (control socket) and its kernel shows that it joined the anycast
    address on ``interface``."""
    anycast = str(home_agents_anycast(d.home_prefix))
    for ha in d.has:
        assert status(d, ha.name)["anycast"] == [anycast, interface], status(d, ha.name)
        assert (anycast, interface) in kernel_anycast(d, ha.name), ha.name


def check_discovered(d):
    """The node learned all three home agents from a DHAAD reply, best preference first, and
    registered with the first (the waits of ``register`` saw it)."""
    mn = status(d, d.mn.name)
    assert mn["known_home_agents"] == [h.address for h in d.has], mn
    c = d.ask(d.mn.name, "counters")
    assert c.get("sent.DhaadRequest", 0) >= 1 and c.get("received.DhaadReply", 0) >= 1, c
    replied = sum(d.ask(h.name, "counters").get("core.dhaad-replied", 0) for h in d.has)
    assert replied >= 1
    return c


def check_dhaad_wire(d, packets, requests=1):
    """At least ``requests`` DHAAD requests from the care-of address to the anycast address
    and replies from a home agent address to the care-of address, in the clear; no ICMPv6
    Destination Unreachable towards the care-of address."""
    seen = [summarise(p) for p in packets]
    anycast, coa = home_agents_anycast(d.home_prefix), d.care_of
    has = {IPv6Address(h.address) for h in d.has}
    asked = [s for s in seen if (s.src, s.dst) == (coa, anycast) and s.upper == NH_ICMPV6
             and s.icmp_type == ICMP6_DHAAD_REQUEST]
    answered = [s for s in seen if s.src in has and s.dst == coa and s.upper == NH_ICMPV6
                and s.icmp_type == ICMP6_DHAAD_REPLY]
    # A packet crossing r is seen twice (in and out); the node's own capture once.
    assert len({(s.src, s.dst) for s in asked}) == 1 and len(asked) >= requests, asked
    assert len(answered) >= requests, [(s.src, s.dst) for s in seen if s.upper == NH_ICMPV6]
    unreachable = [s for s in seen if s.dst == coa and s.icmp_type == ICMP6_DEST_UNREACH]
    assert not unreachable, [(s.src, s.dst, s.icmp_code) for s in unreachable]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dhaad_shared_home_link(tmp_path, require_root, backend):
    """Draft 3.1 Figure 1 with a node that knows no home agent: r resolves the anycast address
    by Neighbour Solicitation, a home agent replies with ha1, ha2, ha3 by preference, the node
    registers with ha1 and the correspondent's ping reaches it; after ha1's SIGKILL ha2's
    take-over HASR is obeyed at once (no new DHAAD) and the ping goes through ha2."""
    with deployment(tmp_path, topology.shared_home_link, capture_links=("home",),
                    dhaad=True, backend=backend) as (d, caps):
        start_home_agents(d, caps)
        check_anycast_joined(d, "eth0")
        register(d)
        before = check_discovered(d)
        reach(d, d.mn.address, through="ha1")
        fail_over(d)
        # The kernel ended the killed daemon's membership with its socket.
        anycast = str(home_agents_anycast(d.home_prefix))
        assert (anycast, "eth0") not in kernel_anycast(d, "ha1")
        after = d.ask(d.mn.name, "counters")
        assert after["sent.DhaadRequest"] == before["sent.DhaadRequest"], after
        assert after.get("received.HaSwitchRequest", 0) >= 1, after
        assert forwarding(d, "ha2")["proxy_nd"] == [[d.mn.address, "eth0"]]
        reach(d, d.mn.address, through="ha2")
        check_counters(d)
        # r resolved the anycast address to a home agent's link-layer address.
        neigh = d.topology.run("r", ["ip", "-6", "neigh", "show",
                                     str(home_agents_anycast(d.home_prefix))]).stdout
        assert "lladdr" in neigh, neigh
    packets = caps["r"].packets_seen + caps["mn"].packets_seen + caps["home"].packets_seen
    check_wire(d, packets)
    check_dhaad_wire(d, packets)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dhaad_no_home_link(tmp_path, require_root, backend):
    """Draft 3.2 Figure 5 with a node that knows no home agent: r routes the home prefix, and so
    the anycast address, to ha1, which replies with ha1, ha2, ha3; the node registers with ha1
    and is reached through it; after ha1's SIGKILL ha2's take-over HASR is obeyed at once. Then
    ha2 is stopped (SIGTERM) with drain-mode discover: its HASR names nobody, the node runs
    DHAAD again through r's route to ha2, which answers without itself, and the node registers
    with ha3, which then carries the ping."""
    with deployment(tmp_path, topology.no_home_link, dhaad=True,
                    drain_mode="discover", backend=backend) as (d, caps):
        start_home_agents(d, caps)
        check_anycast_joined(d, "lo")
        register(d)
        before = check_discovered(d)
        assert d.route_prefix(via=["ha1"]) == ["ha1"]
        reach(d, d.mn.address, through="ha1")
        fail_over(d)
        after = d.ask(d.mn.name, "counters")
        assert after["sent.DhaadRequest"] == before["sent.DhaadRequest"], after
        assert d.route_prefix(via=["ha2"]) == ["ha2"]
        reach(d, d.mn.address, through="ha2")
        check_counters(d)
        # Once ha2 has stopped, its kernel no longer has haha's guard and answers a peer's
        # last in-flight ESP with a Parameter Problem, as any host without haha would: the
        # "no Parameter Problem" check covers the wire up to the stop; after it, only ha2 may.
        upto = {name: len(caps[name].packets()) for name in ("r", "mn")}
        d.stop("ha2")
        d.wait_for("DHAAD again and registration with ha3", lambda: status(d, d.mn.name).get(
            "home_agent") == d.has[2].address, timeout=15)
        again = d.ask(d.mn.name, "counters")
        assert again["sent.DhaadRequest"] > after["sent.DhaadRequest"], again
        assert d.node("ha2").process.returncode in (0, -15)
        assert d.route_prefix() == ["ha3"]
        reach(d, d.mn.address, through="ha3")
    check_wire(d, caps["r"].packets_seen[:upto["r"]] + caps["mn"].packets_seen[:upto["mn"]])
    later = [summarise(p) for name in ("r", "mn") for p in caps[name].packets_seen[upto[name]:]]
    ha2 = {IPv6Address(d.has[1].address), IPv6Address(d.has[1].signalling)}
    assert all(s.src in ha2 for s in later if s.icmp_type == ICMP6_PARAMETER_PROBLEM)
    check_dhaad_wire(d, caps["r"].packets_seen + caps["mn"].packets_seen, requests=2)
