"""Address take-over (haha.core.addrtakeover) on the in-memory network: a mobile node that obeys
no switch request survives its home agent's death, the address comes back only through the
authenticated hand-back, and expired copies are still taken over."""

from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.effects import HoldAddress
from haha.core.homeagent import HomeAgent
from haha.core.settings import HomeAgentSettings, SettingsError
from haha.testing import Network
from haha.wire.mh import BE_UNKNOWN_MH_TYPE, BindingError

PREFIX = N("2001:db8:1::/64")
HA = [A(f"2001:db8:1::{i}") for i in (1, 2, 3)]  # home agent addresses (they move)
SIG = [A(f"2001:db8:f::{i}") for i in (1, 2, 3)]  # signalling addresses (they stay)
HOA = A("2001:db8:1::100")
COA = A("2001:db8:99::1")


def network(seed=0, count=3, **overrides):
    net = Network(seed=seed)
    has = []
    for i in range(count):
        kw = dict(address=HA[i], haha_address=SIG[i], home_prefix=PREFIX,
                  peers=tuple(s for s in SIG[:count] if s != SIG[i]), ha_lifetime=10,
                  hello_interval=2.0, boot_wait=5.0, address_takeover=True)
        kw.update(overrides)
        has.append(net.add_home_agent(f"ha{i + 1}", HomeAgentSettings(**kw)))
    net.run_for(10)
    return net, has


def deployed_node(net, home_agent, lifetime=60, **kw):
    """A node like the deployed stacks: a configured home agent, no switch support."""
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[home_agent], lifetime=lifetime,
                             obeys_switch=False, registration_attempts=0, **kw)
    mn.start(COA)
    net.run_until_idle(timeout=30)
    assert mn.machine.state == "registered"
    return mn


def test_every_home_agent_holds_its_own_address_after_the_peers_confirm():
    """At start each home agent asks its peers, and holds its own address once both
    confirmed (none held it), not before."""
    net, has = network()
    for h in has:
        assert h.forwarding.held == {h.address}
        assert len(h.events_named("address-handback-confirmed")) == 2
        assert h.machine.counters["handback-request-received"] == 2
    assert not any(h.events_named("address-released") for h in has)


def test_survivor_takes_over_the_address_and_the_node_never_notices():
    """ha1 dies. ha2 (first-ranked survivor) takes over its bindings and its address; the
    node answers the HASR with Binding Error 2 and is no longer asked; its next BU, sent to
    ha1's address, reaches ha2, which answers from that address and tunnels from it. The
    node's home agent never changes."""
    net, has = network()
    mn = deployed_node(net, HA[0], lifetime=40)
    seq = mn.machine.sequence
    net.kill("ha1")
    net.run_until_true(lambda: has[1].events_named("take-over"), timeout=30)
    ha2 = has[1]
    assert ha2.forwarding.held == {HA[0], HA[1]}
    assert ha2.events_named("address-taken-over")[0].fields == {"address": HA[0],
                                                                "peer": SIG[0]}
    assert not has[2].forwarding.held - {HA[2]}  # ha3 ranks second: holds only its own
    route = ha2.forwarding.routes[HOA]
    assert route.local == HA[0] and route.care_of == COA
    assert HOA in ha2.forwarding.proxied
    net.run_for(5)
    assert ha2.machine.counters["switch-unsupported"] == 1
    assert mn.machine.counters["switch-refused"] == 1
    sent = ha2.machine.counters["switch-sent"]
    net.run_for(120)  # refreshes, across several would-be HASR retransmissions
    assert ha2.machine.counters["switch-sent"] == sent == 1
    assert mn.machine.state == "registered" and mn.machine.home_agent == HA[0]
    assert mn.machine.sequence != seq  # it refreshed, and the refresh was accepted...
    b = ha2.machine.cache.get(HOA)
    assert b.primary is None and b.sequence == mn.machine.sequence and b.local == HA[0]
    assert mn.machine.counters["dhaad-sent"] == 0  # ...without the node looking elsewhere


def test_returning_home_agent_gets_address_and_bindings_back_by_hand_back():
    """ha1 restarts: it holds its address only after ha2 released it and confirmed; the
    bindings ha2 served from that address go back to ha1 as its primaries."""
    net, has = network()
    mn = deployed_node(net, HA[0], lifetime=40)
    net.kill("ha1")
    net.run_until_true(lambda: HA[0] in has[1].forwarding.held, timeout=30)
    net.run_for(3)
    restart = net.now
    net.start("ha1")
    ha1, ha2 = has[0], has[1]
    assert ha1.forwarding.held == set()  # asked, not yet given
    net.run_until_true(lambda: HA[0] in ha1.forwarding.held, timeout=30)
    released = [t for t, e in ha2.events if e.name == "address-released"]
    held = [t for t, e in ha1.events if e.name == "address-held" and t >= restart]
    assert len(released) == 1 and len(held) == 1 and released[0] < held[-1]
    assert HA[0] not in ha2.forwarding.held
    net.run_for(5)
    b1, b2 = ha1.machine.cache.get(HOA), ha2.machine.cache.get(HOA)
    assert b1.primary is None and b1.local == HA[0]
    assert b2.primary == SIG[0]
    assert HOA in ha1.forwarding.routes and HOA not in ha2.forwarding.routes
    net.run_for(60)
    assert mn.machine.state == "registered" and mn.machine.home_agent == HA[0]
    assert ha1.machine.cache.get(HOA).sequence == mn.machine.sequence


def test_hand_back_for_an_address_that_is_not_the_requesters_is_refused():
    """A peer asking for another peer's address gets nothing: the holder keeps it and does
    not confirm."""
    net, has = network()
    net.kill("ha1")
    net.run_until_true(lambda: HA[0] in has[1].forwarding.held, timeout=30)
    ha2 = has[1].machine
    from haha.core.effects import Inbound
    from haha.wire.mh import BindingInfoRequest
    from haha.wire.options import IPADDR_HOME_AGENT, IpAddress
    bir = BindingInfoRequest(7, (IpAddress(IPADDR_HOME_AGENT, HA[0], 128),))
    out = ha2.receive(Inbound(bir, SIG[2], SIG[1], protected_by=SIG[2]), net.now)
    assert ha2.counters["dropped:handback-not-theirs"] == 1
    assert not any(type(e) is HoldAddress for e in out) and not any(
        getattr(e, "message", None) is not None for e in out)
    assert HA[0] in ha2.takeover.held


def test_unprotected_hand_back_request_is_dropped():
    """The hand-back is an HA-to-HA message: without ESP it is dropped like any other."""
    s = HomeAgentSettings(address=HA[1], haha_address=SIG[1], home_prefix=PREFIX,
                          peers=(SIG[0],), address_takeover=True, boot_wait=0,
                          peer_protection_required=True)
    ha = HomeAgent(s)
    ha.start(0.0)
    ha.takeover.held[HA[0]] = SIG[0]
    from haha.core.effects import Inbound
    from haha.wire.mh import BindingInfoRequest
    from haha.wire.options import IPADDR_HOME_AGENT, IpAddress
    bir = BindingInfoRequest(7, (IpAddress(IPADDR_HOME_AGENT, HA[0], 128),))
    out = ha.receive(Inbound(bir, SIG[0], SIG[1]), 1.0)
    assert ha.counters["dropped:unprotected"] == 1
    assert HA[0] in ha.takeover.held and not any(type(e) is HoldAddress for e in out)


def test_copies_that_expired_before_the_primary_was_declared_dead_are_taken_over():
    """Binding lifetime 8 s, HA lifetime 10 s: the copies expire before ha1 is declared
    dead; they are kept and taken over all the same, and the node's next BU lands."""
    net, has = network()
    mn = deployed_node(net, HA[0], lifetime=8)
    net.run_for(3)
    net.kill("ha1")
    net.run_until_true(lambda: has[1].events_named("take-over"), timeout=30)
    assert has[1].events_named("take-over")[0]["count"] == 1
    net.run_for(30)
    b = has[1].machine.cache.get(HOA)
    assert b is not None and b.primary is None and b.sequence == mn.machine.sequence
    assert mn.machine.home_agent == HA[0] and mn.machine.state == "registered"


def test_without_address_takeover_expired_copies_still_are_taken_over_but_no_address():
    """The lingering copies are part of take-over itself; addresses move only with
    address_takeover."""
    net = Network(seed=1)
    has = net.add_home_agents(3, ha_lifetime=10, hello_interval=2.0, boot_wait=5.0)
    net.run_for(10)
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[has[0].address], lifetime=8)
    mn.start(COA)
    net.run_until_idle(timeout=30)
    net.run_for(3)
    net.kill("ha1")
    net.run_until_true(lambda: has[1].events_named("take-over"), timeout=30)
    assert has[1].events_named("take-over")[0]["count"] == 1
    assert all(not h.forwarding.held for h in has)
    assert not any(type(e) is HoldAddress for h in has for e in h.forwarding.log)


def test_binding_error_from_elsewhere_does_not_stop_the_switch_request():
    """Only a Binding Error 2 from the node's care-of address (or home address) stops the
    HASRs; other statuses and other sources are dropped as before."""
    net, has = network()
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[HA[1]], lifetime=60)
    mn.start(COA)
    net.run_until_idle(timeout=30)
    ha2 = has[1].machine
    ha2.switch(HOA, net.now, HA[2])
    from haha.core.effects import Inbound
    for be, src in ((BindingError(BE_UNKNOWN_MH_TYPE, HOA), A("2001:db8:99::77")),
                    (BindingError(1, HOA), COA)):
        ha2.receive(Inbound(be, src, HA[1]), net.now)
        assert HOA in ha2.switching and HOA not in ha2.takeover.unswitchable
    assert ha2.counters["dropped:unexpected"] == 2
    ha2.receive(Inbound(BindingError(BE_UNKNOWN_MH_TYPE, HOA), COA, HA[1]), net.now)
    assert HOA not in ha2.switching and HOA in ha2.takeover.unswitchable


def test_binding_error_with_unspecified_home_address_is_matched_by_care_of():
    """A stack that leaves the Binding Error's Home Address unspecified (and sends no Home
    Address option) is recognised by its care-of address."""
    net, has = network()
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[HA[1]], lifetime=60)
    mn.start(COA)
    net.run_until_idle(timeout=30)
    ha2 = has[1].machine
    ha2.switch(HOA, net.now, HA[2])
    from haha.core.effects import Inbound
    ha2.receive(Inbound(BindingError(BE_UNKNOWN_MH_TYPE, A("::")), COA, HA[1]), net.now)
    assert HOA not in ha2.switching and HOA in ha2.takeover.unswitchable


def test_address_takeover_needs_a_signalling_address_of_its_own():
    """The home agent address moves; the signalling address must not."""
    with pytest.raises(SettingsError, match="address_takeover"):
        HomeAgentSettings(address=HA[0], home_prefix=PREFIX, address_takeover=True)


def test_without_shared_home_link_the_address_is_held_as_a_route():
    """'separate-links' and 'no-home-link' hold the address as a /128 route (on_link False);
    'home-link' on the home interface."""
    for kind, on_link in (("home-link", True), ("separate-links", False),
                          ("no-home-link", False)):
        s = HomeAgentSettings(address=HA[0], haha_address=SIG[0], home_prefix=PREFIX,
                              kind=kind, address_takeover=True, boot_wait=0)
        out = HomeAgent(s).start(0.0)
        holds = [e for e in out if type(e) is HoldAddress]
        assert holds == [HoldAddress(HA[0], True, on_link)]


def test_clean_stop_lets_go_of_every_address():
    """A stopping home agent removes the addresses it holds (its own and taken-over ones)."""
    net, has = network()
    net.kill("ha1")
    net.run_until_true(lambda: HA[0] in has[1].forwarding.held, timeout=30)
    has[1].stop()
    assert has[1].forwarding.held == set()


@pytest.mark.parametrize("misses, bound", [(3, 0.31), (0, 1.01)])
def test_hello_misses_detects_a_dead_peer_after_that_many_intervals(misses, bound):
    """hello_misses=3 with 0.1 s HELLOs: a silent peer is dead 0.3 s after its last HELLO,
    though its HA lifetime (1 s, whole seconds on the wire) has not run out; 0 keeps the HA
    lifetime."""
    net = Network(seed=2)
    has = net.add_home_agents(2, ha_lifetime=1, hello_interval=0.1, boot_wait=0.5,
                              hello_misses=misses)
    net.run_for(2)
    net.kill("ha1")
    killed = net.now
    net.run_until_true(lambda: has[1].events_named("peer-down"), timeout=5)
    (down,) = [t for t, e in has[1].events if e.name == "peer-down"]
    assert down - killed <= bound
    assert down - killed >= bound - 0.11  # not earlier than the intervals (or the lifetime)


def _holders(has):
    out = {}
    for h in has:
        if h.alive:
            for a in h.forwarding.held:
                out.setdefault(a, []).append(h.name)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_kills_and_restarts_never_give_an_address_to_two_live_home_agents(seed):
    """Chaos: three home agents killed and restarted at random (at least one alive). After
    every packet and timer, no address is held by two live home agents; once things settle
    every live home agent holds its own address (a dead one's is held by at most one: see
    docs/protocol.md section 9 for when nobody knows it); restarted, every home agent holds
    its own again."""
    import random
    rng = random.Random(seed)
    net, has = network(seed=seed)
    deployed_node(net, HA[0])
    t_end = net.now + 200
    next_event = net.now + rng.uniform(2, 15)
    changes = 0
    while net.now < t_end:
        if net.now >= next_event:
            alive = [h for h in has if h.alive]
            dead = [h for h in has if not h.alive]
            if dead and (len(alive) == 1 or rng.random() < 0.5):
                net.start(rng.choice(dead).name)
            else:
                net.kill(rng.choice(alive).name)
            changes += 1
            next_event = net.now + rng.uniform(2, 15)
        if not net.step():
            net.now = next_event
        doubles = {a: n for a, n in _holders(has).items() if len(n) > 1}
        assert not doubles, (net.now, doubles)
    assert changes >= 15
    net.run_for(60)
    holders = _holders(has)
    for h in has:
        if h.alive:
            assert holders.get(h.address) == [h.name], (h.name, holders)
        else:
            assert len(holders.get(h.address, [])) <= 1, (h.name, holders)
    for h in has:
        if not h.alive:
            net.start(h.name)
    net.run_for(60)
    assert _holders(has) == {h.address: [h.name] for h in has}


def test_a_peer_that_dies_before_confirming_no_longer_holds_up_the_hand_back():
    """Waiting for two peers: one confirms, the other is declared dead: the home agent holds
    its own address then (what the dead one's host still held goes at its restart)."""
    from haha.core.addrtakeover import AddressTakeover
    from collections import Counter
    import random
    s = HomeAgentSettings(address=HA[0], haha_address=SIG[0], home_prefix=PREFIX,
                          peers=(SIG[1], SIG[2]), address_takeover=True)
    t = AddressTakeover(s, random.Random(1), Counter())
    out = []
    t.start({SIG[1], SIG[2]}, 0.0, out)
    ident = t._waiting[SIG[1]].identifier
    out.clear()
    t.confirmed(SIG[1], ident, HA[0], out)
    assert not any(type(e) is HoldAddress for e in out) and not t.own
    t.peer_gone(SIG[2], out)
    assert HoldAddress(HA[0], True, True) in out and t.own
