"""The in-memory network runs the daemon's pipeline (haha.endpoint): signalling travels in ESP,
and what ESP or the security policy refuses -- a flipped ICV bit, a replay, an unprotected or
wrongly protected message -- is dropped before any machine sees it."""

from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

from haha.core.settings import HomeAgentSettings
from haha.security.admission import AdmissionSettings
from haha.testing import Network
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import BU_A, BU_H, BindingUpdate, HaHello, encode_mh
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_ESP, IPPROTO_MH

HOA = A("2001:db8:1::100")
COA = A("2001:db8:99::1")
COA2 = A("2001:db8:99::2")
STRANGER = A("2001:db8:1::666")


def registered(secured=True, **kw):
    """Three home agents and one mobile node registered with ha1; returns (net, has, mn)."""
    net = Network(seed=5, secured=secured, **kw)
    has = net.add_home_agents(3)
    net.run_for(20)
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[has[0].address])
    mn.start(COA)
    net.run_until_idle(timeout=60)
    assert has[0].machine.cache.get(HOA).care_of == COA
    return net, has, mn


def capture(net):
    """Every packet put on a link, as (sender, target, bytes)."""
    seen = []
    net.interceptors.append(lambda s, t, p: seen.append((s, t, p)) or p)
    return seen


def test_signalling_travels_in_esp_and_nothing_is_dropped():
    """On a secured network the Binding Update, Binding Acknowledgement and the home agents'
    HELLOs and BIUs are ESP packets on the links (the policy requires it), every node's
    SA database opened them, and no packet was dropped."""
    net = Network(seed=5)
    seen = capture(net)
    has = net.add_home_agents(3)
    net.run_for(20)
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[has[0].address])
    mn.start(COA)
    net.run_until_idle(timeout=60)
    delivered = [(s, t, p) for s, t, p in seen if t is not None]
    assert delivered
    assert all(parse_packet(p).next_header == IPPROTO_ESP for _, _, p in delivered)
    assert {(s, t) for s, t, _ in delivered} >= {("mn", "ha1"), ("ha1", "mn"), ("ha1", "ha2")}
    assert mn.counters["received.BindingAck"] == 1
    assert has[1].counters["received.BindingInfoUpdate"] >= 1
    assert net.counters["dropped"] == 0 and net.counters["delivered"] > 0
    assert all(n.endpoint.sadb.counters.get("auth-failed", 0) == 0 for n in net.nodes.values())


def test_a_flipped_icv_bit_is_dropped_and_changes_nothing():
    """A Binding Update whose last ICV bit flips on the way is refused by ESP at the home agent
    (auth-failed): the binding keeps the old care-of address, the node is not registered at
    the new one. The network before the endpoint delivered it (it carried no ESP)."""
    net, has, mn = registered()

    def flip(sender, target, packet):
        if sender == "mn":
            return packet[:-1] + bytes((packet[-1] ^ 1,))
        return packet

    net.interceptors.append(flip)
    mn.move(COA2)
    net.run_for(10)
    ha = has[0]
    assert ha.counters["dropped.auth-failed"] >= 1
    assert ha.counters["received.BindingUpdate"] == 1  # only the first registration
    assert ha.machine.cache.get(HOA).care_of == COA
    assert net.counters["dropped"] >= 1
    assert mn.counters["received.BindingAck"] == 1  # the new care-of address is never acked


def test_a_flipped_bit_between_home_agents_is_dropped():
    """A BIU between home agents with a flipped ICV bit is dropped at the peer (auth-failed)
    and its copy of the binding is not updated to the new care-of address."""
    net, has, mn = registered()

    def flip(sender, target, packet):
        if sender == "ha1" and target == "ha2":
            return packet[:-1] + bytes((packet[-1] ^ 0x80,))
        return packet

    net.interceptors.append(flip)
    mn.move(COA2)
    net.run_for(3)
    assert has[1].counters["dropped.auth-failed"] >= 1
    assert has[0].machine.cache.get(HOA).care_of == COA2
    assert has[1].machine.cache.get(HOA).care_of == COA
    assert has[2].machine.cache.get(HOA).care_of == COA2  # the untouched link carries it


def test_a_replayed_binding_update_is_dropped():
    """A captured, genuine Binding Update replayed after the node moved is refused by the
    anti-replay window: the binding stays at the node's current care-of address."""
    net = Network(seed=5)
    seen = capture(net)
    has = net.add_home_agents(3)
    net.run_for(20)
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[has[0].address])
    mn.start(COA)
    net.run_until_idle(timeout=60)
    first_bu = next(p for s, t, p in seen if s == "mn")
    mn.move(COA2)
    net.run_until_idle(timeout=60)
    assert has[0].machine.cache.get(HOA).care_of == COA2
    net.inject("ha1", first_bu)
    assert has[0].counters["dropped.replay"] + has[0].counters["dropped.too-old"] == 1
    assert has[0].machine.cache.get(HOA).care_of == COA2


def _unprotected_bu(home_address, care_of, home_agent, sequence=1):
    bu = BindingUpdate(sequence, BU_A | BU_H, 100, ())
    payload = encode_mh(bu, home_address, home_agent, DEFAULT_PROFILE)
    return build_packet(care_of, home_agent, IPPROTO_MH, payload, home_address=home_address)


def test_an_unprotected_binding_update_is_refused_by_the_policy():
    """A forged Binding Update without ESP for a home address in the home prefix is dropped
    by the policy (unprotected): no binding is created. The network before the endpoint handed
    the core such a message (it had no policy)."""
    net, has, mn = registered()
    net.inject("ha1", _unprotected_bu(STRANGER, COA2, has[0].address))
    net.inject("ha1", _unprotected_bu(HOA, COA2, has[0].address, sequence=99))
    assert has[0].counters["dropped.unprotected"] == 2
    assert has[0].machine.cache.get(STRANGER) is None
    assert has[0].machine.cache.get(HOA).care_of == COA
    assert has[0].counters["received.BindingUpdate"] == 1


def test_a_hello_protected_by_a_mobile_node_is_refused():
    """A HELLO sealed under a mobile node's SA (a node posing as a home agent) is opened by
    ESP but refused by the policy (wrong-peer: HELLO needs a home agent's SA); the forged
    home agent does not become a peer."""
    net, has, mn = registered()
    ha = has[0]
    hello = HaHello(1, 10, 60, 5, 64, HOA)
    payload = encode_mh(hello, HOA, ha.address, DEFAULT_PROFILE)
    esp = mn.endpoint.sadb.protect(ha.address, IPPROTO_MH, payload)
    net.inject("ha1", build_packet(HOA, ha.address, IPPROTO_ESP, esp))
    assert ha.counters["dropped.wrong-peer"] == 1
    assert not ha.machine.is_known_peer(HOA)


def test_esp_from_the_wrong_source_is_refused():
    """The node's own SA used for a packet claiming another home address is refused
    (wrong-source): one node cannot register for another."""
    net, has, mn = registered()
    ha = has[0]
    bu = BindingUpdate(50, BU_A | BU_H, 100, ())
    payload = encode_mh(bu, STRANGER, ha.address, DEFAULT_PROFILE)
    esp = mn.endpoint.sadb.protect(ha.address, IPPROTO_MH, payload)
    net.inject("ha1", build_packet(COA2, ha.address, IPPROTO_ESP, esp, home_address=STRANGER))
    assert ha.counters["dropped.wrong-source"] + ha.counters["dropped.unknown-spi"] == 1
    assert ha.machine.cache.get(STRANGER) is None


def test_lab_policy_network_sends_in_clear_and_keeps_the_known_source_check():
    """``secured=False`` runs the lab policy: the same registration works with no ESP on the
    links, and a HELLO from an address that is no configured peer is still refused
    (unknown-source)."""
    net = Network(seed=5, secured=False)
    seen = capture(net)
    has = net.add_home_agents(3)
    net.run_for(20)
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[has[0].address])
    mn.start(COA)
    net.run_until_idle(timeout=60)
    assert has[0].machine.cache.get(HOA).care_of == COA
    assert seen and all(parse_packet(p).next_header != IPPROTO_ESP for _, _, p in seen)
    ha = has[0]
    stranger = A("2001:db8:1::77")
    payload = encode_mh(HaHello(1, 10, 60, 5, 64, stranger), stranger, ha.address,
                        DEFAULT_PROFILE)
    net.inject("ha1", build_packet(stranger, ha.address, IPPROTO_MH, payload))
    assert ha.counters["dropped.unknown-source"] == 1
    assert not ha.machine.is_known_peer(stranger)


def test_admission_budgets_apply_in_the_network():
    """With ``admission`` the nodes run the daemon's budgets: a flood of unprotected packets
    from one stranger is cut off by the per-source budget (rate-limited) while the node's
    registration, charged to its SA, still goes through."""
    net, has, mn = registered(admission=AdmissionSettings(source_rate=1.0, source_burst=5))
    for i in range(50):
        net.inject("ha1", _unprotected_bu(STRANGER, COA2, has[0].address, sequence=i))
    assert has[0].counters["dropped.rate-limited"] >= 40
    mn.move(COA2)
    net.run_until_idle(timeout=60)
    assert has[0].machine.cache.get(HOA).care_of == COA2


def test_address_take_over_continues_the_dead_peers_esp():
    """With address take-over the survivor speaks with the dead peer's node as that peer, in
    ESP: it derives the SA pair of the held address (TakeoverKeys), continues above the
    sequence numbers the BIUs announced, and the node's refreshes, sent to the dead peer's
    address, are authenticated by it -- no replay or authentication drop anywhere."""
    prefix = N("2001:db8:1::/64")
    addresses = [A(f"2001:db8:1::{i}") for i in (1, 2, 3)]
    signalling = [A(f"2001:db8:f::{i}") for i in (1, 2, 3)]
    net = Network(seed=2)
    has = [net.add_home_agent(f"ha{i + 1}", HomeAgentSettings(
        address=addresses[i], haha_address=signalling[i], home_prefix=prefix,
        peers=tuple(s for s in signalling if s != signalling[i]), ha_lifetime=10,
        hello_interval=2.0, boot_wait=5.0, address_takeover=True)) for i in range(3)]
    net.run_for(10)
    mn = net.add_mobile_node("mn", home_address=HOA, home_agents=[addresses[0]], lifetime=40,
                             obeys_switch=False, registration_attempts=0)
    mn.start(COA)
    net.run_until_idle(timeout=30)
    net.kill("ha1")
    net.run_until_true(lambda: addresses[0] in has[1].forwarding.held, timeout=30)
    received = has[1].counters["received.BindingUpdate"]
    net.run_for(120)
    keys = has[1].endpoint.takeover_keys
    assert keys.counters["sas-derived"] == 2 and keys.counters["esp-state-learned"] > 0
    assert has[1].endpoint.sadb.has_local(addresses[0], HOA)
    assert has[1].counters["received.BindingUpdate"] > received  # refreshes, authenticated
    assert mn.machine.state == "registered" and mn.machine.home_agent == addresses[0]
    for node in net.nodes.values():
        bad = {k: v for k, v in node.counters.items()
               if k in ("dropped.replay", "dropped.too-old", "dropped.auth-failed")}
        assert not bad, (node.name, bad)
