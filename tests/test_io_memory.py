"""The in-memory hub of haha.io.memory: deterministic delivery through task.Clock (tier 2)."""

from ipaddress import IPv6Address

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from haha.interfaces import IMobilityTransport
from haha.io.memory import MemoryHub
from haha.wire.ipv6 import build_packet

A = IPv6Address("2001:db8::a")
B = IPv6Address("2001:db8::b")
C = IPv6Address("2001:db8::c")


def _hub(latency=0.5):
    clock = Clock()
    hub = MemoryHub(clock, latency=latency)
    eps, inbox = {}, {}
    for name, addr in (("a", A), ("b", B), ("c", C)):
        eps[name] = hub.endpoint(addr, name=name)
        inbox[name] = []
        eps[name].start(inbox[name].append)
    return clock, hub, eps, inbox


def test_provides_the_transport_interface():
    """MemoryTransport provides IMobilityTransport."""
    assert verifyObject(IMobilityTransport, MemoryHub(Clock()).endpoint(A))


def test_delivery_is_by_destination_and_through_the_clock():
    """A packet reaches the endpoint owning its destination only after the latency elapses on
    the injected clock; multicast reaches every other endpoint; unknown destinations count."""
    clock, hub, eps, inbox = _hub()
    p = build_packet(A, B, 135, bytes(8))
    eps["a"].send(p)
    assert inbox["b"] == []
    clock.advance(0.5)
    assert inbox["b"] == [p] and inbox["c"] == [] and inbox["a"] == []
    m = build_packet(A, IPv6Address("ff02::1"), 58, bytes(8))
    eps["a"].send(m)
    clock.advance(0.5)
    assert inbox["b"][-1] == m and inbox["c"] == [m] and inbox["a"] == []
    eps["a"].send(build_packet(A, IPv6Address("2001:db8::99"), 59, b""))
    assert hub.counters["no_route"] == 1 and eps["a"].counters["undelivered"] == 1
    assert hub.log[0] == ("a", p, ("b",))


def test_faults_partition_loss_and_moving_addresses():
    """partition() cuts a pair both ways until heal(); drop_if loses chosen packets; an
    endpoint that changes address (a mobile node moving) receives at the new one; a stopped
    endpoint drops what arrives."""
    clock, hub, eps, inbox = _hub(latency=0)
    p = build_packet(A, B, 135, bytes(8))
    hub.partition(eps["a"], eps["b"])
    eps["a"].send(p)
    clock.advance(0)
    assert inbox["b"] == [] and hub.counters["partitioned"] == 1
    hub.heal()
    hub.drop_if = lambda pkt: pkt[6] == 135
    eps["a"].send(p)
    clock.advance(0)
    assert inbox["b"] == [] and hub.counters["dropped"] == 1
    hub.drop_if = None
    new = IPv6Address("2001:db8::bb")
    eps["b"].remove_address(B)
    eps["b"].add_address(new)
    eps["a"].send(build_packet(A, new, 59, b""))
    clock.advance(0)
    assert len(inbox["b"]) == 1
    eps["b"].stop()
    eps["a"].send(build_packet(A, new, 59, b""))
    clock.advance(0)
    assert eps["b"].counters["dropped_stopped"] == 1
    with pytest.raises(ValueError, match="'2001:db8::zz' is not an IPv6 address"):
        eps["a"].add_address("2001:db8::zz")
    with pytest.raises(TypeError, match="is not an IPv6 address"):
        eps["a"].add_address(b"\x20\x01" + bytes(14))
    assert eps["a"].addresses == {A}  # nothing changed by the refusals
    eps["a"].send(b"short")
    assert eps["a"].counters["send_invalid"] == 1


def test_addresses_may_be_given_as_text():
    """MemoryHub.endpoint, add_address and remove_address take an address's text as well as
    an IPv6Address; packets reach the endpoint at either."""
    clock = Clock()
    hub = MemoryHub(clock)
    inbox = []
    a = hub.endpoint("2001:db8::a", name="a")
    b = hub.endpoint(" 2001:db8::b", IPv6Address("2001:db8::bc"), name="b")
    a.start(lambda p: None)
    b.start(inbox.append)
    assert b.addresses == {B, IPv6Address("2001:db8::bc")}
    b.add_address("2001:db8::bd")
    b.remove_address("2001:db8::bc")
    for dst in ("2001:db8::b", "2001:db8::bc", "2001:db8::bd"):
        a.send(build_packet(A, IPv6Address(dst), 59, b""))
    clock.advance(0)
    assert len(inbox) == 2 and a.addresses == {A}
    with pytest.raises(ValueError, match="'nowhere' is not an IPv6 address"):
        hub.endpoint("nowhere")
