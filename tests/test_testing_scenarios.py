"""The issue's scenarios on the in-memory network, each asserted exactly.

Three (or four) home agents serve 2001:db8:1::/64 with 200 mobile nodes: 150 hosts, 25 mobile
routers in explicit mode and 25 in implicit mode. Every packet is encoded and decoded by the
codec on the way.
"""

from collections import Counter
from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.core.settings import HomeAgentSettings
from haha.testing import Network

PREFIX = IPv6Network("2001:db8:1::/64")
N = 200


def hoa(i):
    return IPv6Address(0x20010DB8000100000000000000001000 + i)


def coa(i, generation=0):
    return IPv6Address(0x20010DB8009900000000000000000000 + (generation << 16) + i + 1)


def mnp(i):
    return IPv6Network(f"2001:db8:{0x100 + i:x}::/48")


ROUTERS = {hoa(i): (mnp(i),) for i in range(150, 200)}
IMPLICIT = {hoa(i): (mnp(i),) for i in range(175, 200)}


def ha_addresses(count):
    return [IPv6Address(int(PREFIX.network_address) + i + 1) for i in range(count)]


def build(seed, running=3, total=3, home_agent_of=lambda i: i % 3, known=None, **overrides):
    """A network of ``total`` home agents (the first ``running`` started) and N mobile nodes,
    each configured with ``home_agent_of(i)`` first (then ``known(i)`` others)."""
    net = Network(seed=seed)
    addrs = ha_addresses(total)
    has = []
    for k in range(total):
        s = HomeAgentSettings(address=addrs[k], home_prefix=PREFIX,
                              peers=[a for a in addrs if a != addrs[k]],
                              mobile_routers=ROUTERS, implicit_prefixes=IMPLICIT, **overrides)
        has.append(net.add_home_agent(f"ha{k + 1}", s, start=k < running))
    net.run_for(20)  # boot wait and HELLOs
    mns = []
    for i in range(N):
        first = addrs[home_agent_of(i)]
        others = [addrs[k] for k in (known(i) if known else []) if addrs[k] != first]
        mns.append(net.add_mobile_node(
            f"mn{i}", home_address=hoa(i), home_agents=[first] + others,
            mobile_router=i >= 150, prefixes=(mnp(i),) if 150 <= i < 175 else ()))
    return net, has, mns


def start_all(net, mns):
    for i, mn in enumerate(mns):
        mn.start(coa(i))
    net.run_until_idle(timeout=600)


def assert_converged(net, mns, expected_home_agent=None):
    """Every node registered at a live home agent that is its only primary, every live home
    agent holds the same N bindings matching what the nodes registered, and forwarding state
    agrees with the primaries."""
    live = net.home_agents()
    by_address = {h.address: h for h in live}
    snaps = [h.snapshot() for h in live]
    assert all(s == snaps[0] for s in snaps[1:])
    snap = snaps[0]
    assert len(snap) == N
    primaries = net.primaries()
    assert len(primaries) == N
    for i, mn in enumerate(mns):
        m = mn.machine
        assert m.state == "registered"
        assert m.home_agent in by_address
        if expected_home_agent is not None:
            assert m.home_agent == expected_home_agent(i)
        holder = by_address[m.home_agent]
        assert primaries[m.home_address] == [holder.name]
        view = snap[m.home_address]
        assert (view.care_of, view.sequence, view.primary) == (m.care_of, m.sequence,
                                                               holder.identity)
        assert view.prefixes == (mnp(i),) * (i >= 150)
    for h in live:
        mine = {b.home_address for b in h.machine.cache if b.primary is None}
        assert set(h.forwarding.routes) == mine
        assert h.forwarding.proxied == mine
        assert all(r.primary and r.care_of == snap[a].care_of
                   for a, r in h.forwarding.routes.items())


def test_three_home_agents_two_hundred_nodes_converge():
    """200 nodes and routers registering across 3 home agents leave identical caches, one
    primary per node (the one it registered with), and each primary forwarding its own."""
    net, has, mns = build(seed=1)
    start_all(net, mns)
    addrs = ha_addresses(3)
    assert_converged(net, mns, expected_home_agent=lambda i: addrs[i % 3])
    assert Counter(h.machine.cache.primary_count for h in has) == Counter({67: 2, 66: 1})
    assert net.counters["undecodable"] == 0


def test_convergence_with_twenty_percent_loss_between_home_agents():
    """With 20% loss on every HA-HA link, BIU retransmission still brings every cache to the
    same 200 bindings; no peer is wrongly declared dead (lifetime of 6 HELLO intervals)."""
    net, has, mns = build(seed=2, ha_lifetime=60)
    names = [h.name for h in has]
    net.set_links(names, names, loss=0.2)
    start_all(net, mns)
    addrs = ha_addresses(3)
    assert_converged(net, mns, expected_home_agent=lambda i: addrs[i % 3])
    assert net.counters["lost"] > 0
    assert sum(h.machine.counters["biu-retransmitted"] for h in has) > 0
    assert not any(h.events_named("peer-down") for h in has)


def test_booting_fourth_home_agent_learns_every_binding_by_bulk_request():
    """A fourth home agent started after registration asks each peer for all its bindings
    (bulk BIR) once its boot wait is over, and ends with exactly the others' cache."""
    net, has, mns = build(seed=3, running=3, total=4)
    start_all(net, mns)
    asked_before = [h.machine.counters["bir-received"] for h in has[:3]]
    ha4 = net.start("ha4")
    net.run_for(16)  # its boot wait
    net.run_until_idle(timeout=60)
    assert_converged(net, mns)
    c = ha4.machine.counters
    assert c["bir-sent"] == 3
    assert c["biu-entry-applied"] == N
    assert c["bu-accepted"] == 0
    assert [h.machine.counters["bir-received"] - n
            for h, n in zip(has[:3], asked_before)] == [1, 1, 1]
    done = ha4.events_named("bulk-sync-complete")
    assert sorted(e["peer"] for e in done) == [h.identity for h in has[:3]]
    assert all(e["removed"] == 0 for e in done)
    assert ha4.forwarding.routes == {} and ha4.forwarding.proxied == set()


def test_primary_of_a_hundred_nodes_dies_and_every_node_is_rehomed():
    """ha1 holds 100 primaries and dies. The first-ranked survivor takes them over at once
    (forwarding from its copies), sends each a HASR naming itself; nodes that know it switch at
    once, the others find a home agent by DHAAD. No binding is lost, none has two primaries."""
    net, has, mns = build(seed=4, home_agent_of=lambda i: 0 if i < 100 else 1 + i % 2,
                          known=lambda i: [1, 2] if i % 2 == 0 else [])
    start_all(net, mns)
    assert has[0].machine.cache.primary_count == 100
    net.kill("ha1")
    # Right after the HA lifetime ran out the survivor forwards for every one of them.
    net.run_until_true(lambda: has[1].events_named("take-over"), timeout=60)
    assert has[1].events_named("take-over") == [
        has[1].events_named("take-over")[0]]
    assert has[1].events_named("take-over")[0].fields == {"peer": has[0].identity,
                                                          "count": 100}
    assert has[1].machine.cache.primary_count == 200 - 50
    assert len(has[1].forwarding.routes) == 150
    net.run_until_idle(timeout=600)
    assert_converged(net, mns)
    assert not has[2].events_named("take-over")
    moved = Counter(mns[i].machine.home_agent for i in range(100))
    assert sum(moved.values()) == 100
    # Nodes that knew ha2 were switched to it directly, as the HASR asked.
    assert all(mns[i].machine.home_agent == has[1].address for i in range(0, 100, 2))
    assert all(mns[i].machine.counters["dhaad-sent"] == 0 for i in range(0, 100, 2))
    assert all(mns[i].machine.counters["dhaad-sent"] >= 1 for i in range(1, 100, 2))


def test_drained_home_agent_ends_with_no_primary():
    """Draining ha2 sends every one of its nodes a HASR naming the live peers in turn; they
    re-register there, ha2 keeps only copies and reports the drain complete."""
    net, has, mns = build(seed=5, known=lambda i: [0, 1, 2])
    start_all(net, mns)
    before = has[1].machine.cache.primary_count
    assert before == 67
    has[1].drain()
    net.run_until_idle(timeout=600)
    assert has[1].machine.cache.primary_count == 0
    assert has[1].forwarding.routes == {} and has[1].forwarding.proxied == set()
    assert [e.name for e in has[1].events_named("drain-complete")] == ["drain-complete"]
    assert_converged(net, mns)
    moved = Counter(mns[i].machine.home_agent for i in range(1, N, 3))
    assert moved == Counter({has[0].address: 34, has[2].address: 33})


@pytest.mark.parametrize("older_at", ["ha1", "ha2"])
def test_two_home_agents_claiming_one_node_resolve_to_the_newer_registration(older_at):
    """A node registers with one home agent, then (while the two are cut off from each
    other) with the other: both hold it as primary. When the partition heals, the BIU
    retransmissions settle it on the newer registration everywhere, whatever the ranks."""
    net = Network(seed=6)
    has = net.add_home_agents(3)
    net.run_for(20)
    first = {"ha1": has[0], "ha2": has[1]}[older_at]
    second = has[1] if first is has[0] else has[0]
    mn = net.add_mobile_node("mn", home_address="2001:db8:1::77",
                             home_agents=[first.address, second.address])
    mn.start("2001:db8:99::1")
    net.run_until_idle(timeout=10)
    older = mn.machine.sequence
    net.partition(["ha1"], ["ha2"])
    first.switch("2001:db8:1::77", desired=second.address)
    net.run_until_true(lambda: mn.machine.home_agent == second.address, timeout=10)
    net.run_for(2)
    assert net.primaries()[mn.home_address] == sorted([first.name, second.name])
    newer = mn.machine.sequence
    assert newer != older
    net.heal()
    net.run_until_idle(timeout=120)
    assert net.primaries() == {mn.home_address: [second.name]}
    assert net.identical_caches()
    view = first.snapshot()[mn.home_address]
    assert (view.sequence, view.primary) == (newer, second.identity) == (
        mn.machine.sequence, mn.machine.home_agent)
    assert first.events_named("primary-lost")[0]["to"] == second.identity
    assert first.forwarding.routes == {} and set(second.forwarding.routes) == {mn.home_address}


def test_registration_completes_when_round_trip_exceeds_every_retransmission_interval():
    """A mobile node behind a path whose round trip (40 s) is longer than even the largest
    retransmission interval (32 s): every BA answers a BU the node has already retransmitted
    with a new number. The node takes the answer to any copy of its registration in flight, so it
    registers at the first BA instead of retransmitting forever."""
    net = Network(seed=4)
    ha, = net.add_home_agents(1)
    mn = net.add_mobile_node("mn", home_address=hoa(1), home_agents=[ha.address])
    net.set_links(["mn"], ["ha1"], latency=20.0)
    mn.start(coa(1))
    net.run_for(45)
    assert mn.machine.state == "registered" and mn.machine.home_agent == ha.address
    view = ha.snapshot()[hoa(1)]
    assert view.care_of == coa(1)
