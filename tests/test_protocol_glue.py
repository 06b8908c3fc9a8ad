"""haha.protocol is glue around haha.endpoint: the transport's bytes go to the endpoint, its
queue is carried out in order (packets to the transport, effects to the backend, events to the
log and observers), a contained core failure is logged with its traceback, and one timer
follows the endpoint's next_timer."""

import random
from ipaddress import IPv6Address as A

from twisted.internet.task import Clock
from twisted.logger import Logger

from haha.backends.null import NullBackend
from haha.core.homeagent import HomeAgent
from haha.core.settings import HomeAgentSettings
from haha.endpoint import HomeAgentEndpoint
from haha.protocol import HomeAgentAdapter
from haha.security import keys
from haha.security.policy import SecurityPolicy
from haha.security.sadb import HOME_AGENT, SecurityAssociationDatabase
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import HaHello, encode_mh
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_ESP, IPPROTO_MH

HA1 = A("2001:db8:1::1")
HA2 = A("2001:db8:1::2")
SECRET = bytes(range(32))


class Sent:
    def __init__(self):
        self.packets = []

    def send(self, packet, interface=None):
        self.packets.append(packet)


def adapter():
    """A started home agent adapter with one peer (HA2), a null backend and a log capture."""
    clock = Clock()
    clock.advance(100)
    sadb = SecurityAssociationDatabase.from_specs(keys.derive_pair(SECRET, HA1, HA2, HOME_AGENT))
    machine = HomeAgent(HomeAgentSettings(address=HA1, home_prefix="2001:db8:1::/64",
                                          peers=(HA2,), boot_wait=0.0), random.Random(1))
    logged = []
    a = HomeAgentAdapter(machine, Sent(), clock, DEFAULT_PROFILE, SecurityPolicy(DEFAULT_PROFILE),
                         sadb, backend=NullBackend(), log=Logger(observer=logged.append))
    a.running = True
    a.call(machine.start, clock.seconds())
    return a, clock, logged


def hello_from_peer(seq):
    peer = SecurityAssociationDatabase.from_specs(keys.derive_pair(SECRET, HA2, HA1, HOME_AGENT))
    for _ in range(seq - 1):  # the peer's sequence numbers move on
        peer.protect(HA1, IPPROTO_MH, b"\x00" * 8)
    esp = peer.protect(HA1, IPPROTO_MH, encode_mh(HaHello(seq, 0, 30, 10, 64, HA2), HA2, HA1))
    return build_packet(HA2, HA1, IPPROTO_ESP, esp)


def test_the_adapter_wraps_an_endpoint_and_shares_its_counters():
    """The adapter's pipeline is a HomeAgentEndpoint; its counters, policy and SA database are
    the endpoint's (one set of numbers for the metrics)."""
    a, _, _ = adapter()
    assert type(a.endpoint) is HomeAgentEndpoint
    assert a.counters is a.endpoint.counters
    assert a.sadb is a.endpoint.sadb and a.policy is a.endpoint.policy


def test_one_timer_follows_the_endpoints_next_timer():
    """After start exactly one delayed call is armed, at the endpoint's next_timer; when it
    fires the machine's timer runs and its HELLO reaches the transport in ESP."""
    a, clock, _ = adapter()
    calls = clock.getDelayedCalls()
    assert len(calls) == 1 and calls[0].getTime() == a.endpoint.next_timer()
    before = len(a.transport.packets)
    clock.advance(calls[0].getTime() - clock.seconds())
    assert len(a.transport.packets) > before
    assert parse_packet(a.transport.packets[-1]).next_header == IPPROTO_ESP
    assert len(clock.getDelayedCalls()) == 1


def test_a_protected_hello_reaches_the_machine_and_its_events_the_observers():
    """A HELLO from the peer goes through the endpoint into the machine; the events it
    produces are counted once and handed to the observers."""
    a, clock, _ = adapter()
    seen = []
    a.observers.append(seen.append)
    a.packet_received(hello_from_peer(1))
    assert a.counters["received.HaHello"] == 1
    assert a.machine.is_known_peer(HA2)
    names = [e.name for e in seen]
    assert names and all(a.counters["event." + n] == names.count(n) for n in set(names))


def test_a_contained_core_failure_is_logged_with_its_traceback():
    """A machine that raises is contained by the endpoint (core-failed) and the adapter logs
    the failure with the exception and its traceback; the next packet is processed."""
    a, clock, logged = adapter()

    def boom(inbound, now):
        raise RuntimeError("core bug")

    real = a.machine.receive
    a.machine.receive = boom
    a.packet_received(hello_from_peer(1))
    assert a.counters["core-failed"] == 1
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1
    failure = failures[0]["log_failure"]
    assert failure.check(RuntimeError) and "boom" in failure.getTraceback()
    a.machine.receive = real
    a.packet_received(hello_from_peer(2))
    assert a.counters["received.HaHello"] == 2


def test_a_dropped_packet_arms_no_timer_and_sends_nothing():
    """Garbage is counted and dropped by the endpoint; the adapter sends nothing and leaves
    its one timer as it was."""
    a, clock, _ = adapter()
    timer = clock.getDelayedCalls()[0]
    sent = len(a.transport.packets)
    a.packet_received(b"\x60" + bytes(47))
    assert sum(v for k, v in a.counters.items() if k.startswith("dropped.")) == 1
    assert len(a.transport.packets) == sent
    assert clock.getDelayedCalls() == [timer]


def test_packets_delivered_together_re_arm_the_timer_once_after_them():
    """Packets the transport delivers in one turn of the reactor are answered at once, but the
    machine's next deadline is asked once, after them (a delayed call due now), not once per
    packet; then exactly one timer is armed, at the endpoint's next_timer."""
    a, clock, _ = adapter()
    asked = []
    real = a.endpoint.next_timer
    a.endpoint.next_timer = lambda: asked.append(1) or real()
    sent = len(a.transport.packets)
    for seq in range(1, 6):
        a.packet_received(hello_from_peer(seq))
    assert a.counters["received.HaHello"] == 5 and not asked
    assert len(a.transport.packets) > sent  # the answers went out with each packet
    clock.advance(0)
    assert len(asked) == 1
    calls = clock.getDelayedCalls()
    assert len(calls) == 1 and calls[0].getTime() == real()


def test_stopping_the_timer_cancels_a_pending_re_arm():
    """A service stopping its machine between a packet and the re-arm leaves no delayed call
    behind (neither the timer nor the pending re-arm)."""
    a, clock, _ = adapter()
    a.packet_received(hello_from_peer(1))
    a.running = False
    a.stop_timer()
    assert clock.getDelayedCalls() == []
