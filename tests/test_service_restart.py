"""Services on the in-memory hub (ESP on): a home agent restarted without its sequence file
rejoins on its own, through the boot epoch its peers learn from its first authentic packet; a
home agent or mobile node restarted without it is heard by the other at once, its SAs with
mobile nodes starting above what it sent before (the time floor).

The control is the case the issue found: ha1's peers had accepted well over an anti-replay
window of its packets, so a run starting again at sequence number 1 under the old keys would
be dropped as too old for ever.
"""

import os
from dataclasses import replace
from ipaddress import IPv6Address as A

import pytest

from haha.backends.null import NullBackend
from haha.config import mobile_node_from_text
from haha.discovery.static import StaticDiscovery
from haha.service import HomeAgentService, MobileNodeService

from test_service import HAS, HOA, MN_TEXT, Network


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    yield n
    n.stop_all()


def _crash(net, i):
    net.ends[i].stop()  # no flush, no goodbye
    net.has[i].adapter.running = False
    net.has[i].adapter.stop_timer()


@pytest.mark.parametrize("lose", ["sequence-file", "whole-disk"])
def test_restart_without_state_rejoins_within_two_hello_intervals(net, lose):
    """ha1 crashes after ~120 HELLOs to each peer and comes back with no sequence file (or no
    state at all): within two HELLO intervals both peers list it again, follow its new epoch,
    drop nothing as too old, and it relearns the node's binding from them."""
    net.start()
    net.run(120)
    assert net.has[1].counters()["received.HaHello"] > 100
    _crash(net, 0)
    net.run(6)
    assert [p["address"] for p in net.has[1].peers()] == [str(HAS[2])]
    seq_file = net.configs[0].security.sequence_file
    os.unlink(seq_file)
    if lose == "whole-disk":
        state = os.path.splitext(seq_file)[0] + ".state"
        if os.path.exists(state):
            os.unlink(state)
    end = net.hub.endpoint(HAS[0], name="ha1-again")
    again = HomeAgentService.build(net.configs[0], net.clock, backend=NullBackend(),
                                   transport=end, discovery=StaticDiscovery(net.configs[0].peers))
    net.has[0] = again
    again.startService()
    net.run(2.0)  # two HELLO intervals
    for other in net.has[1:]:
        assert str(HAS[0]) in [p["address"] for p in other.peers()]
        c = other.counters()
        assert c["securityassociationdatabase.epoch-switched"] == 1
        assert c["securityassociationdatabase.too-old"] == 0
    net.run(3)
    assert [b["home_address"] for b in again.bindings()] == [str(HOA)]


def _moves(net, n):
    """``n`` moves, each acknowledged (the node's endpoint takes every new care-of address)."""
    acks = net.mn.counters().get("received.BindingAck", 0)
    for i in range(n):
        coa = A(f"2001:db8:20::{0x200 + i:x}")
        net.mn_end.add_address(coa)
        net.mn.move(coa)
        net.run(0.3)
    assert net.mn.counters()["received.BindingAck"] >= acks + n


@pytest.fixture
def wall(monkeypatch):
    """The services' wall clock, moved by hand: the restart happens ten minutes after the
    start (task.Clock drives everything else)."""
    import haha.service

    now = [1_800_000_000.0]
    monkeypatch.setattr(haha.service, "wall_clock", lambda: now[0])
    return now


def test_mobile_node_restarted_without_its_sequence_file_registers_at_once(wall, net,
                                                                            tmp_path):
    """The node sent ~70 Binding Updates, crashes and starts again with no sequence file: its
    SA starts above them (one number per second since 2020), so ha1 accepts its first Binding
    Update instead of dropping it as too old."""
    net.start()
    _moves(net, 70)
    assert net.mn.status()["home_agent"] == str(HAS[0])
    net.mn_end.stop()
    net.mn.adapter.running = False
    net.mn.adapter.stop_timer()
    os.unlink(tmp_path / "mn.seq")
    wall[0] += 600
    before = dict(net.has[0].sadb.counters)
    end = net.hub.endpoint(A("2001:db8:20::999"), name="mn-again")
    config = mobile_node_from_text(MN_TEXT.format(keys=tmp_path), str(tmp_path / "mn.conf"))
    again = MobileNodeService.build(
        replace(config, care_of_address=A("2001:db8:20::999")), net.clock, transport=end)
    net.mn = again
    again.startService()
    net.run(2)
    assert again.status()["state"] == "registered"
    assert again.status()["home_agent"] == str(HAS[0])
    after = net.has[0].sadb.counters
    assert (after["too-old"], after["replay"]) == (before["too-old"], before["replay"])


def test_home_agent_restarted_without_its_file_is_heard_by_its_node(wall, net):
    """ha1 (after ~70 Binding Acknowledgements to the node) loses its sequence file: its first
    Binding Acknowledgement of the new run is accepted by the node, which stays with ha1."""
    net.start()
    _moves(net, 70)
    _crash(net, 0)
    os.unlink(net.configs[0].security.sequence_file)
    wall[0] += 600
    end = net.hub.endpoint(HAS[0], name="ha1-again")
    again = HomeAgentService.build(net.configs[0], net.clock, backend=NullBackend(),
                                   transport=end, discovery=StaticDiscovery(net.configs[0].peers))
    net.has[0] = again
    again.startService()
    net.run(2)
    before = dict(net.mn.adapter.sadb.counters)
    net.mn_end.add_address(A("2001:db8:20::abc"))
    net.mn.move(A("2001:db8:20::abc"))
    net.run(1)
    assert net.mn.status()["state"] == "registered"
    assert net.mn.status()["home_agent"] == str(HAS[0])
    assert net.mn.status()["care_of"] == "2001:db8:20::abc"
    assert net.mn.adapter.sadb.counters["too-old"] == before["too-old"]
