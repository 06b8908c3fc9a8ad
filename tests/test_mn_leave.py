"""A mobile node that stops deregisters first, and waits at most 1.5 s for the answer.

The machine's ``leave`` sends the away form of a deregistration (RFC 6275 11.7.1: lifetime 0,
from the care-of address with a Home Address option, protected); ``MobileNodeService``
stopping on the in-memory hub (``test_service.Network``) removes its binding from every home
agent, and stops anyway after 1.5 s when its home agent does not answer.
"""

from ipaddress import IPv6Address

from haha.core.effects import Event, Inbound, Send, TunnelDown
from haha.core.mobilenode import MobileNode
from haha.core.settings import MobileNodeSettings
from haha.leaving import LEAVE_TIMEOUT
from haha.wire.mh import BindingAck
from test_service import HAS, HOA, Network

A = IPv6Address
COA = A("2001:db8:20::100")


def test_leave_sends_the_away_deregistration_and_ends_on_its_ack():
    """``leave`` while registered: tunnel down, a protected BU with lifetime 0 from the
    care-of address carrying the Home Address option; its BA ends in ``home`` with a
    ``deregistered`` event. Without a binding, ``leave`` simply stops."""
    m = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix="2001:db8:1::/64",
                                      home_agents=(HAS[0],)))
    bu = [e for e in m.start(0.0, COA) if type(e) is Send][0].message
    m.receive(Inbound(BindingAck(0, bu.sequence, 15), HAS[0], COA, None, HOA, HAS[0]), 0.5)
    assert m.state == "registered"
    out = m.leave(1.0)
    assert any(type(e) is TunnelDown for e in out)
    (send,) = [e for e in out if type(e) is Send]
    assert (send.src, send.dst, send.home_address, send.protect) == (COA, HAS[0], HOA, HAS[0])
    assert send.message.lifetime == 0 and m.state == "deregistering"
    out = m.receive(Inbound(BindingAck(0, send.message.sequence, 0), HAS[0], COA, None, HOA,
                            HAS[0]), 1.1)
    assert [e.name for e in out if type(e) is Event][0] == "deregistered"
    assert m.state == "home"
    fresh = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix="2001:db8:1::/64",
                                          home_agents=(HAS[0],)))
    fresh.start(0.0, COA)
    fresh.leave(0.1)
    assert fresh.state == "idle"


def _held(net):
    return [s.machine.cache.get(HOA) is not None for s in net.has]


def test_stopping_node_deregisters_everywhere(tmp_path):
    """The registered node stops: its deregistration is acknowledged at once, and no home
    agent holds its binding any more (the primary told the copies)."""
    net = Network(tmp_path)
    net.start()
    assert _held(net) == [True, True, True]
    d = net.mn.stopService()
    net.run(0.5)
    assert d.called
    assert net.mn.adapter.counters["leave-acknowledged"] == 1
    net.run(2)
    assert _held(net) == [False, False, False]
    assert net.mn.machine.state == "idle"


def test_stopping_node_gives_up_after_the_bounded_wait(tmp_path):
    """With its home agent unreachable the node still stops, 1.5 s after it was asked to,
    counting the unanswered deregistration."""
    net = Network(tmp_path)
    net.start()
    for end in net.ends:
        net.hub.partition(net.mn_end, end)
    d = net.mn.stopService()
    net.run(LEAVE_TIMEOUT - 0.2)
    assert not d.called
    net.run(0.3)
    assert d.called
    assert net.mn.adapter.counters["leave-timed-out"] == 1
    assert net.mn.machine.state == "idle"
