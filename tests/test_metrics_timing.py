"""haha.control.timing: which message or event starts and ends each measured latency."""

from ipaddress import IPv6Address

import pytest

from haha.control.timing import LatencyTracker
from haha.core.effects import Event
from haha.wire.mh import BindingAck, BindingInfoAck, BindingInfoUpdate, BindingUpdate

A = IPv6Address
HOA, HOA2 = A("2001:db8:1::100"), A("2001:db8:1::101")
PEER, PEER2 = A("2001:db8:1::2"), A("2001:db8:1::3")


def tracker(role="home-agent", **kw):
    seen = {"registration": [], "sync": [], "takeover": []}
    t = LatencyTracker(role, observe_registration=seen["registration"].append,
                       observe_sync=seen["sync"].append,
                       observe_takeover=seen["takeover"].append, **kw)
    return t, seen


def test_home_agent_registration_is_bu_received_to_ba_sent():
    """A BA sent to a home address ends the latency its BU started; a BA nobody asked for,
    or to another node, measures nothing."""
    t, seen = tracker()
    t.message("out", BindingAck(0, 1, lifetime=10), HOA, 1.0)      # unsolicited: nothing
    t.message("in", BindingUpdate(5, lifetime=10), HOA, 10.0)
    t.message("out", BindingAck(0, 5, lifetime=10), HOA2, 10.5)    # another node: nothing
    t.message("out", BindingAck(0, 5, lifetime=10), HOA, 10.25)
    t.message("out", BindingAck(0, 5, lifetime=10), HOA, 11.0)     # answered already
    assert seen["registration"] == [0.25]
    assert t.pending()["registrations"] == 0


def test_sync_latency_counts_from_the_first_transmission():
    """A retransmitted BIU keeps its first send time; the BIA with that identifier from that
    peer ends it; an identifier from another peer does not."""
    t, seen = tracker()
    biu = BindingInfoUpdate(7, ())
    t.message("out", biu, PEER, 1.0)
    t.message("out", biu, PEER, 2.0)  # retransmission
    t.message("in", BindingInfoAck(7, 0), PEER2, 2.5)
    assert seen["sync"] == []
    t.message("in", BindingInfoAck(7, 0), PEER, 3.0)
    assert seen["sync"] == [2.0]


def test_a_dead_peer_leaves_no_pending_sync():
    """BIUs to a peer that goes down are forgotten (not measured, not kept)."""
    t, seen = tracker()
    t.message("out", BindingInfoUpdate(1, ()), PEER, 1.0)
    t.message("out", BindingInfoUpdate(2, ()), PEER2, 1.0)
    t.event(Event("peer-down", peer=PEER, reason="expired"), 5.0)
    assert t.pending()["syncs"] == 1
    t.message("in", BindingInfoAck(1, 0), PEER, 6.0)
    assert seen["sync"] == []


def test_pending_requests_are_bounded():
    """Requests never answered keep at most ``limit`` entries, the oldest forgotten first."""
    t, seen = tracker(limit=3)
    for i in range(10):
        t.message("in", BindingUpdate(1, lifetime=10), A(int(HOA) + i), float(i))
    assert t.pending()["registrations"] == 3
    t.message("out", BindingAck(0, 1, lifetime=10), HOA, 20.0)  # the first: forgotten
    t.message("out", BindingAck(0, 1, lifetime=10), A(int(HOA) + 9), 20.0)
    assert seen["registration"] == [11.0]


def test_takeover_lasts_until_every_claimed_node_registered_again():
    """The switch requests just before a take-over name its nodes; the duration ends when the
    last of them is accepted again (a rejected BA does not count, an ended binding does)."""
    t, seen = tracker()
    t.event(Event("switch-requested", home_address=A("2001:db8:1::999"), desired=None), 0.0)
    t.event(Event("peer-down", peer=PEER, reason="expired"), 10.0)
    t.event(Event("switch-requested", home_address=HOA, desired=None), 10.0)
    t.event(Event("switch-requested", home_address=HOA2, desired=None), 10.0)
    t.event(Event("take-over", peer=PEER, count=2), 10.0)
    assert t.pending()["takeovers"] == 2
    t.message("out", BindingAck(0, 1, lifetime=10), HOA, 11.0)
    t.message("out", BindingAck(129, 1), HOA2, 11.5)  # refused: still waiting
    assert seen["takeover"] == []
    t.event(Event("binding-expired", home_address=HOA2), 14.0)
    assert seen["takeover"] == [4.0]
    assert t.pending()["takeovers"] == 0


def test_mobile_node_registration_is_first_bu_to_registered():
    """Retransmissions do not restart the clock; 'registered' ends it; a deregistration is
    not a registration."""
    t, seen = tracker("mobile-node")
    t.message("out", BindingUpdate(1, lifetime=10), PEER, 1.0)
    t.message("out", BindingUpdate(2, lifetime=10), PEER, 2.5)  # retransmission
    t.event(Event("registered", home_agent=PEER), 3.0)
    t.event(Event("registered", home_agent=PEER), 4.0)  # nothing pending: nothing measured
    t.message("out", BindingUpdate(3, lifetime=0), PEER, 5.0)
    t.event(Event("deregistered", home_agent=PEER, status=0), 5.5)
    assert seen["registration"] == [2.0]
    assert t.pending()["registrations"] == 0


def test_unknown_role_is_refused():
    """A role other than home-agent or mobile-node is a clear error."""
    with pytest.raises(ValueError, match="role 'router'"):
        LatencyTracker("router")


def test_mobile_node_stop_abandons_the_pending_registration():
    """A node stopped while registering (its machine's ``state`` event into ``idle``; a mobile
    node emits no ``stopped``) measures nothing, and its next registration is timed from its
    own first Binding Update, not from the one sent before the stop."""
    t, seen = tracker("mobile-node")
    t.message("out", BindingUpdate(1, lifetime=10), PEER, 1.0)
    t.event(Event("state", old="registering", new="idle", input="stop"), 2.0)
    assert t.pending()["registrations"] == 0
    t.event(Event("state", old="idle", new="discovering", input="start-away"), 10.0)
    t.message("out", BindingUpdate(2, lifetime=10), PEER, 10.0)
    t.event(Event("registered", home_agent=PEER), 10.5)
    assert seen["registration"] == [0.5]
