"""haha.endpoint, the sans-IO pipeline, driven by hand: bytes in with ``receive(data, now)``,
packets and effects out, the machine's timer through ``next_timer``/``handle_timer``; no
reactor, no transport, no Twisted."""

import random
import subprocess
import sys
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.effects import Event, InstallRoute
from haha.core.homeagent import HomeAgent
from haha.core.mobilenode import MobileNode
from haha.core.settings import HomeAgentSettings, MobileNodeSettings
from haha.endpoint import (
    Datagram,
    Failed,
    HomeAgentEndpoint,
    MobileNodeEndpoint,
    Role,
    Tunnelled,
)
from haha.security import keys
from haha.security.policy import SecurityPolicy
from haha.security.sadb import HOME_AGENT, MOBILE_NODE, SecurityAssociationDatabase
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_ESP, IPPROTO_IPV6

PREFIX = N("2001:db8:1::/64")
HA = A("2001:db8:1::1")
HOA = A("2001:db8:1::100")
COA = A("2001:db8:99::1")
SECRET = bytes(range(32))


def pair():
    """A home agent endpoint (boot wait 0, no peers) and a mobile node endpoint keyed for
    each other with derived SAs, under the ESP policy."""
    policy = SecurityPolicy(DEFAULT_PROFILE)
    ha_sadb = SecurityAssociationDatabase.from_specs(
        keys.derive_pair(SECRET, HA, HOA, MOBILE_NODE))
    mn_sadb = SecurityAssociationDatabase.from_specs(
        keys.derive_pair(SECRET, HOA, HA, HOME_AGENT))
    ha = HomeAgentEndpoint(
        HomeAgent(HomeAgentSettings(address=HA, home_prefix=PREFIX, boot_wait=0.0),
                  random.Random(1)),
        DEFAULT_PROFILE, policy, ha_sadb)
    mn = MobileNodeEndpoint(
        MobileNode(MobileNodeSettings(home_address=HOA, home_prefix=PREFIX, home_agents=(HA,)),
                   random.Random(2)),
        DEFAULT_PROFILE, policy, mn_sadb)
    return ha, mn


def carry(src, dst, now):
    """Hand every packet ``src`` queued to ``dst``; returns how many."""
    packets = src.datagrams_to_send()
    for d in packets:
        dst.receive(d.data, now)
    return len(packets)


def test_the_endpoint_imports_no_reactor():
    """haha.endpoint is sans-IO: it imports nothing from Twisted itself, and importing it
    loads no ``twisted.internet`` module (no reactor, no sockets). (The interface
    declarations of haha.interfaces, which the SA database implements, bring
    ``twisted.plugin``.)"""
    import ast

    import haha.endpoint

    with open(haha.endpoint.__file__) as f:
        tree = ast.parse(f.read())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
        [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not [m for m in imported if m.split(".")[0] == "twisted"]
    code = ("import sys, haha.endpoint; "
            "bad = [m for m in sys.modules if m.startswith('twisted.internet')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_registration_runs_through_two_endpoints_in_esp():
    """A mobile node registers with a home agent with nothing but the two endpoints: the
    Binding Update and Acknowledgement are ESP packets (datagrams_to_send), the home agent
    queues the forwarding route and its events, the node reaches 'registered'."""
    ha, mn = pair()
    assert ha.role is Role.HOME_AGENT and str(mn.role) == "mobile-node"
    ha.start(0.0)
    ha.output()
    mn.start(1.0, care_of=COA)
    bu = mn.datagrams_to_send()
    assert len(bu) == 1 and bu[0].destination == HA and bu[0].source == COA
    assert parse_packet(bu[0].data).next_header == IPPROTO_ESP
    ha.receive(bu[0].data, 1.0)
    out = ha.output()
    routes = [o for o in out if type(o) is InstallRoute]
    assert routes and routes[0].route.home_address == HOA
    assert any(type(o) is Event and o.name == "binding-created" for o in out)
    ba = [o for o in out if type(o) is Datagram]
    assert len(ba) == 1 and parse_packet(ba[0].data).next_header == IPPROTO_ESP
    mn.receive(ba[0].data, 1.01)
    assert mn.machine.state == "registered"
    assert mn.counters["received.BindingAck"] == 1 and ha.counters["received.BindingUpdate"] == 1
    assert ha.counters["event.binding-created"] == 1


def test_datagrams_to_send_leaves_the_other_output_queued_in_order():
    """datagrams_to_send hands over packets only; output() then yields the rest, in the order
    the machine returned it, and empties the queue."""
    ha, mn = pair()
    ha.start(0.0)
    mn.start(1.0, care_of=COA)
    carry(mn, ha, 1.0)
    assert ha.datagrams_to_send()
    rest = ha.output()
    assert rest and not any(type(o) is Datagram for o in rest)
    kinds = [type(o).__name__ for o in rest]
    assert kinds.index("InstallRoute") < len(kinds)
    assert ha.output() == [] and ha.datagrams_to_send() == []


def test_the_timer_is_the_machines_next_deadline():
    """next_timer is the machine's next deadline; handle_timer runs the machine at that time
    (the node retransmits its unanswered Binding Update)."""
    ha, mn = pair()
    mn.start(0.0, care_of=COA)
    assert len(mn.datagrams_to_send()) == 1
    due = mn.next_timer()
    assert due is not None and due > 0.0
    mn.handle_timer(due)
    again = mn.datagrams_to_send()
    assert len(again) == 1 and again[0].destination == HA


def test_a_failing_machine_is_contained_or_raised():
    """A machine that raises: by default counted (core-failed) and queued as Failed with the
    exception; with contain_failures=False the exception reaches the caller."""
    ha, _ = pair()

    def broken(now):
        raise RuntimeError("boom")

    assert ha.call(1.0, broken, 1.0) is None
    out = ha.output()
    assert ha.counters["core-failed"] == 1
    assert len(out) == 1 and type(out[0]) is Failed and out[0].where == "broken"
    assert str(out[0].error) == "boom"
    ha.contain_failures = False
    with pytest.raises(RuntimeError):
        ha.call(2.0, broken, 2.0)


def test_a_flipped_bit_is_dropped_before_the_machine():
    """A Binding Update with one flipped ICV bit is counted (auth-failed) and dropped: the home
    agent queues nothing and creates no binding."""
    ha, mn = pair()
    heard = []
    ha.on_drop = lambda reason, fields: heard.append(reason)
    ha.start(0.0)
    ha.output()
    mn.start(1.0, care_of=COA)
    data = mn.datagrams_to_send()[0].data
    ha.receive(data[:-1] + bytes((data[-1] ^ 4,)), 1.0)
    assert ha.counters["dropped.auth-failed"] == 1 and heard == ["auth-failed"]
    assert ha.output() == [] and ha.machine.cache.get(HOA) is None


def test_drops_are_reported_to_on_drop():
    """on_drop hears of every dropped packet with its reason and fields (the adapter logs
    them); malformed bytes never reach the machine."""
    ha, _ = pair()
    heard = []
    ha.on_drop = lambda reason, fields: heard.append(reason)
    ha.receive(b"\x60" + bytes(10), 0.0)
    assert heard and heard[0].startswith("malformed-")
    assert ha.counters["packets-received"] == 1 and ha.output() == []


def test_ipv6_in_ipv6_is_queued_for_decapsulation():
    """A tunnelled packet is not the pipeline's: it is queued as Tunnelled, bytes unchanged,
    for the backend or tunnel."""
    ha, _ = pair()
    inner = build_packet(HOA, A("2001:db8:5::1"), 59, b"")
    outer = build_packet(COA, HA, IPPROTO_IPV6, inner)
    ha.receive(outer, 0.0)
    assert ha.output() == [Tunnelled(outer)]
