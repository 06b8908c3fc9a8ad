"""Services on the in-memory hub (ESP on): a home agent restarted without its sequence file
rejoins on its own, through the boot epoch its peers learn from its first authentic packet.

The control is the case the issue found: ha1's peers had accepted well over an anti-replay
window of its packets, so a run starting again at sequence number 1 under the old keys would
be dropped as too old for ever.
"""

import os

import pytest

from haha.discovery.static import StaticDiscovery
from haha.backends.null import NullBackend
from haha.service import HomeAgentService

from test_service import HAS, HOA, Network


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    yield n
    for s in n.has + [n.mn]:
        if s.running:
            s.stopService()
            n.run(6)


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
