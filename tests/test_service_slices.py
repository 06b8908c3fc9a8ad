"""A large take-over does not stall the daemon: HELLOs keep flowing, no peer is declared dead.

Three home agent services on the in-memory hub under task.Clock (``test_service.Network``). The
second home agent holds 4,000 copies of the first one's bindings; the first is cut off, and the
second takes them over. Its backend is made to cost 1 ms of clock time per installed route (the
clock moves while the work runs, as a real reactor's would), so done in one go the take-over
blocks the daemon for 4 s, longer than the 3 s peer lifetime. In slices, the reactor delivers
and sends HELLOs between two slices: no false peer-down on either side. The unsliced run is
kept as the control: there, both the survivor and its peer declare each other dead.
"""

import pytest

from haha.core.effects import Inbound
from haha.core.switching import TAKE_OVER_SLICE
from haha.wire.mh import BU_A, BU_H, BindingInfoUpdate
from haha.wire.options import BceInfo
from test_service import HAS, Network

from ipaddress import IPv6Address

COPIES = 4000
BASE = int(IPv6Address("2001:db8:1::1:0"))
COA = int(IPv6Address("2001:db8:99::"))


def _copies(ha, now):
    """Give ``ha`` COPIES copies naming HAS[0] as primary, as BIUs from it would."""
    for k in range(0, COPIES, 25):
        entries = tuple(BceInfo(IPv6Address(BASE + i), IPv6Address(COA + i), BU_H | BU_A, 1,
                                200, ()) for i in range(k, k + 25))
        inbound = Inbound(BindingInfoUpdate(k + 1, entries), HAS[0], ha.machine.identity,
                          None, None, HAS[0])
        ha.adapter.call(ha.machine.receive, inbound, now)


@pytest.mark.parametrize("sliced", [True, False], ids=["sliced", "unsliced-control"])
def test_hellos_keep_flowing_during_a_large_take_over(tmp_path, sliced):
    """Sliced: the take-over of 4,000 bindings completes and neither the survivor nor its
    peer declares the other dead. Unsliced (the control): both do."""
    net = Network(tmp_path)
    net.start()
    ha2, ha3 = net.has[1], net.has[2]
    if not sliced:
        ha2.machine.work.size = None
    _copies(ha2, net.clock.seconds())
    assert sum(b.primary == HAS[0] for b in ha2.machine.cache) == COPIES + 1  # + the node

    install = ha2.adapter.backend.install

    def costly(route):
        net.clock.rightNow += 0.001  # the clock moves while the daemon works
        return install(route)

    ha2.adapter.backend.install = costly
    downs = []
    for name, ha in (("ha2", ha2), ("ha3", ha3)):
        ha.adapter.observers.append(
            lambda e, name=name: downs.append((name, e.fields["peer"]))
            if e.name == "peer-down" else None)
    net.hub.partition(net.ends[0], net.ends[1])
    net.hub.partition(net.ends[0], net.ends[2])
    net.run(15)
    taken = sum(b.primary is None for b in ha2.machine.cache
                if int(b.home_address) >= BASE)
    assert taken == COPIES
    false_downs = [d for d in downs if d[1] != HAS[0]]
    if sliced:
        assert ("ha2", HAS[0]) in downs
        assert false_downs == []
        assert ha2.machine.counters["slices"] >= COPIES // TAKE_OVER_SLICE
    else:
        assert ("ha3", HAS[1]) in false_downs
