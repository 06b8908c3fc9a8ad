"""Resynchronisation cannot lose a binding: push on a peer's return, and binding digests in
HELLO that repair whatever else diverged (docs/protocol.md, "Binding digests").

The in-memory network carries every HELLO (with its Binding Digest option) through the codec.
Asymmetric partitions are the case that used to lose bindings for good: one home agent declares
its peer dead while the peer never doubts it; what the first registers meanwhile was never pushed
to the peer, and the peer, never having seen anything wrong, never pulled it.
"""

import random
from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.core.cache import BindingCache, bce_digest
from haha.testing import Network

PREFIX = IPv6Network("2001:db8:1::/64")


def hoa(i):
    return IPv6Address(0x20010DB8000100000000000000001000 + i)


def coa(i, generation=0):
    return IPv6Address(0x20010DB8009900000000000000000000 + (generation << 16) + i + 1)


def _converged(net, count):
    """Every live home agent holds the same ``count`` bindings, each node is registered and
    has exactly one primary, the home agent its own machine names."""
    snaps = list(net.caches().values())
    if not all(s == snaps[0] for s in snaps[1:]) or len(snaps[0]) != count:
        return False
    primaries = net.primaries()
    by_address = {h.address: h.name for h in net.home_agents()}
    for mn in net.mobile_nodes():
        m = mn.machine
        if m.state != "registered" or primaries.get(m.home_address) != [by_address[m.home_agent]]:
            return False
    return True


def _network(seed, count, **overrides):
    net = Network(seed=seed)
    has = net.add_home_agents(count, hello_interval=1.0, ha_lifetime=4, boot_wait=2.0,
                              **overrides)
    net.run_for(5)
    return net, has


def test_a_returning_peer_gets_what_was_registered_while_it_was_thought_dead():
    """ha1 stops hearing ha2 (ha2 still hears ha1) long enough to declare it dead, and ten
    nodes register with ha1 meanwhile. When ha1 hears ha2 again it pushes them: ha2 holds all
    twenty bindings within two seconds, long before a digest could have noticed."""
    net, (ha1, ha2) = _network(1, 2)
    nodes = [net.add_mobile_node(f"mn{i}", home_address=hoa(i), home_agents=[ha1.address])
             for i in range(20)]
    for i in range(10):
        nodes[i].start(coa(i))
    net.run_for(3)
    assert len(ha2.snapshot()) == 10
    net.blocked.add(("ha2", "ha1"))
    net.run_for(6)
    assert ha1.machine.peers.get(ha2.identity) is None  # declared dead
    assert ha2.machine.peers.get(ha1.identity) is not None  # never doubted
    for i in range(10, 20):
        nodes[i].start(coa(i))
    net.run_for(3)
    assert len(ha1.snapshot()) == 20 and len(ha2.snapshot()) == 10
    net.heal()
    net.run_for(2)
    assert _converged(net, 20)
    assert ha2.machine.counters["anti-entropy-repairs"] == 0


def test_a_digest_repairs_copies_lost_without_any_liveness_change():
    """Copies that vanish at a peer with no peer ever declared dead (state lost some other
    way) are noticed through the primary's HELLO digest and restored by a bulk request, once
    the difference has lasted the anti-entropy delay; a stale extra copy is swept the same way."""
    net, (ha1, ha2) = _network(2, 2)
    nodes = [net.add_mobile_node(f"mn{i}", home_address=hoa(i), home_agents=[ha1.address])
             for i in range(8)]
    for i, mn in enumerate(nodes):
        mn.start(coa(i))
    net.run_for(3)
    assert _converged(net, 8)
    for i in range(3):
        ha2.machine.cache.remove(hoa(i))
    stray = hoa(99)
    ha2.machine.cache.store(stray, coa(99), 0, 1, 600, net.now + 600, (), ha1.identity, None,
                            net.now)
    net.run_for(5)
    assert len(ha2.snapshot()) == 6  # not yet: a difference must last the delay
    net.run_for(10)
    assert _converged(net, 8)
    assert ha2.machine.counters["anti-entropy-repairs"] == 1
    assert ha1.machine.counters["anti-entropy-repairs"] == 0


def test_transient_differences_do_not_trigger_repairs():
    """Steady churn (registrations, refreshes, moves and expiries on three home agents, with
    10 % loss between them) makes digests differ briefly all the time; with no state lost, no
    repair is ever asked for."""
    net, has = _network(3, 3)
    net.set_links(["ha1", "ha2", "ha3"], ["ha1", "ha2", "ha3"], loss=0.1)
    rng = random.Random(3)
    nodes = [net.add_mobile_node(f"mn{i}", home_address=hoa(i), lifetime=40,
                                 home_agents=[has[i % 3].address]) for i in range(30)]
    for i, mn in enumerate(nodes):
        mn.start(coa(i))
    for step in range(60):
        net.run_for(2)
        mn = nodes[rng.randrange(len(nodes))]
        mn.move(coa(nodes.index(mn), step + 1))
    net.run_for(20)
    assert _converged(net, 30)
    assert sum(h.machine.counters["anti-entropy-repairs"] for h in has) == 0


@pytest.mark.parametrize("seed", range(24))
def test_asymmetric_partitions_never_lose_a_binding(seed):
    """Random asymmetric partitions among three home agents (one direction cut at a time, each
    long enough to declare a peer dead), with nodes registering, moving and switching throughout:
    60 s after the last partition heals, every home agent holds every binding and each node has
    exactly one primary."""
    rng = random.Random(seed)
    net, has = _network(100 + seed, 3)
    names = [h.name for h in has]
    nodes = []
    for i in range(18):
        nodes.append(net.add_mobile_node(f"mn{i}", home_address=hoa(i),
                                         home_agents=[has[rng.randrange(3)].address]))
    for i in range(6):
        nodes[i].start(coa(i))
    started = 6
    net.run_for(3)
    for round_ in range(3):
        a, b = rng.sample(names, 2)
        net.blocked.add((a, b))
        for _ in range(rng.randrange(8, 20)):
            net.run_for(1)
            if started < len(nodes) and rng.random() < 0.5:
                nodes[started].start(coa(started))
                started += 1
            elif rng.random() < 0.3:
                i = rng.randrange(started)
                nodes[i].move(coa(i, round_ * 100 + rng.randrange(100)))
        net.heal()
        net.run_for(rng.randrange(1, 6))
    while started < len(nodes):
        nodes[started].start(coa(started))
        started += 1
    net.run_for(60)
    assert _converged(net, len(nodes)), (net.caches(), net.primaries())


def test_the_cache_digest_follows_every_change():
    """The per-primary (count, digest) pair the cache keeps incrementally always equals the
    pair computed from scratch, through stores, updates, owner changes, removals and expiry."""
    rng = random.Random(7)
    cache = BindingCache()
    owners = [None, IPv6Address("2001:db8:1::2"), IPv6Address("2001:db8:1::3")]
    nets = [(), (IPv6Network("2001:db8:100::/48"),)]
    for step in range(2000):
        i = rng.randrange(40)
        if rng.random() < 0.2:
            cache.remove(hoa(i))
        else:
            cache.store(hoa(i), coa(i, rng.randrange(3)), rng.choice((0xC000, 0xC200)),
                        rng.randrange(4), 100, step + rng.randrange(50), rng.choice(nets),
                        rng.choice(owners), None, step)
        if step % 100 == 0:
            cache.pop_expired(step)
        for owner in owners:
            held = [b for b in cache if b.primary == owner]
            want = 0
            for b in held:
                want ^= bce_digest(b.home_address, b.care_of, b.flags, b.sequence, b.prefixes)
            assert cache.digest(owner) == (len(held), want)
