"""The Twisted adapter never lets a packet stop the daemon.

Random bytes, and bit flips of real signalling captured on the in-memory hub, are fed straight to
a running home agent's and mobile node's ``packet_received``: nothing may raise, every packet is
counted, and afterwards the node is still registered and the peers still agree. A failure inside
the machine itself is logged and counted, and the next packet is processed.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_service import HAS, Network


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    net = Network(tmp_path_factory.mktemp("protocol"))
    net.start()
    captured = [p for _, p, _ in net.hub.log]
    assert len(captured) > 20
    return net, captured


def _healthy(net):
    assert net.mn.status()["state"] == "registered"
    views = {tuple(b["primary"] for b in s.bindings()) for s in net.has}
    assert views == {(str(HAS[0]),)}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=200))
def test_random_bytes_are_counted_and_dropped(started, data):
    """Arbitrary bytes: counted, dropped, nothing raised."""
    net, _ = started
    for target in (net.has[0], net.has[1], net.mn):
        before = target.adapter.counters["packets-received"]
        target.adapter.packet_received(b"\x60" + data)
        assert target.adapter.counters["packets-received"] == before + 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7),
       offset=st.integers(min_value=0))
def test_bit_flips_of_real_signalling_change_nothing(started, index, bit, offset):
    """A captured packet with one bit flipped is rejected (ESP authentication, checksums,
    lengths) or, when the flip falls where nothing is checked, harmless."""
    net, captured = started
    packet = bytearray(captured[index % len(captured)])
    packet[offset % len(packet)] ^= 1 << bit
    for target in (net.has[0], net.has[1], net.mn):
        target.adapter.packet_received(bytes(packet))
    assert net.has[0].adapter.counters["core-failed"] == 0


def test_still_healthy_after_the_abuse(started):
    """After the fuzzing above the network still holds one registration, agreed by all."""
    net, _ = started
    net.run(2)
    _healthy(net)
    dropped = sum(v for k, v in net.has[0].adapter.counters.items() if k.startswith("dropped."))
    assert dropped > 0


def test_a_failing_machine_is_contained(started, monkeypatch):
    """An exception inside the core is logged and counted; the adapter keeps going."""
    net, _ = started
    ha = net.has[1]

    def boom(inbound, now):
        raise RuntimeError("core bug")

    monkeypatch.setattr(ha.machine, "receive", boom)
    before = ha.adapter.counters["core-failed"]
    net.run(1.1)  # a fresh HELLO reaches the broken machine (well inside the 3 s lifetime)
    assert ha.adapter.counters["core-failed"] > before
    monkeypatch.undo()
    net.run(2)
    _healthy(net)
