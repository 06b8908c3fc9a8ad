"""Bulk work in slices (haha.core.slices): take-over, bulk answers and mass expiry never do
more than one slice of work per machine call, and give exactly the results of the unsliced
machine.

The same inputs drive two home agents with the same random seed, one with ``work.size = None``
(everything at once, the behaviour before slicing) and one with small slices: the effects of
the sliced one, concatenated over its calls, equal the unsliced ones, and so does its cache.
"""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.effects import Event, Inbound, InstallRoute, Send
from haha.core.homeagent import HomeAgent
from haha.core.settings import HomeAgentSettings
from haha.core.slices import Backlog
from haha.wire.mh import (
    BU_A,
    BU_H,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingUpdate,
    HaHello,
    HaSwitchRequest,
)
from haha.wire.options import IPADDR_HOME_ADDRESS, AlternateCareOfAddress, BceInfo, IpAddress

PREFIX = N("2001:db8:1::/64")
ME, P2, P3 = A("2001:db8:1::1"), A("2001:db8:1::2"), A("2001:db8:1::3")
BASE = int(A("2001:db8:1::1:0"))
COA = int(A("2001:db8:99::"))
N_BINDINGS = 1000


# -- the Backlog itself -------------------------------------------------------------------------


def test_backlog_runs_jobs_in_order_a_slice_at_a_time():
    """Items run in order, at most ``size`` per call (the first slice when the job is added,
    if nothing is queued before it); ``done`` follows the last item; the deadline is in the
    past while work is left and None after."""
    log = []
    b = Backlog(size=3)
    b.add(range(5), lambda i, now, out: out.append(("a", i)), 1.0, log,
          done=lambda now, out: out.append("a-done"))
    b.add(range(2), lambda i, now, out: out.append(("b", i)), 1.0, log,
          done=lambda now, out: out.append("b-done"))
    assert log == [("a", 0), ("a", 1), ("a", 2)]
    assert b.next_deadline() == 1.0
    assert b.run(2.0, log) == 3
    assert log[3:] == [("a", 3), ("a", 4), "a-done", ("b", 0)]
    assert b.next_deadline() == 2.0
    assert b.run(2.5, log) == 1
    assert log[-2:] == [("b", 1), "b-done"]
    assert b.next_deadline() is None and not b.pending()



def test_backlog_has_follows_its_jobs_by_name():
    """``has(name)`` (asked for every packet while a take-over may run) is true exactly while
    a job of that name is queued: two of one name, one finished in its first slice, one
    dropped when no longer alive, and a clear."""
    out = []
    b = Backlog(size=2)
    assert not b.has("take-over")
    b.add(range(1), lambda i, now, out: None, 0.0, out, name="push")  # done at once
    assert not b.has("push")
    b.add(range(3), lambda i, now, out: None, 0.0, out, name="take-over")
    b.add(range(3), lambda i, now, out: None, 0.0, out, name="take-over")
    alive = [True]
    b.add(range(9), lambda i, now, out: None, 0.0, out, alive=lambda: alive[0], name="sweep")
    assert b.has("take-over") and b.has("sweep") and not b.has("push")
    b.run(1.0, out)  # the first job's last item, the second's first
    assert b.has("take-over")
    runs = 0
    while b.has("take-over"):  # until both are over (whatever the slices)
        b.run(2.0 + runs, out)
        runs += 1
    assert runs <= 3 and b.has("sweep") and len(b) == 1
    alive[0] = False
    b.run(9.0, out)
    assert not b.has("sweep") and not b.pending()
    b.add(range(9), lambda i, now, out: None, 0.0, out, name="take-over")
    b.add(range(9), lambda i, now, out: None, 0.0, out, name="bulk-answer")
    b.clear()
    assert not b.has("take-over") and not b.has("bulk-answer")


def test_backlog_drops_a_job_that_is_no_longer_alive_and_unsliced_runs_all():
    """A job whose ``alive()`` turns False is dropped without ``done``; with size None the
    whole job runs inside ``add``."""
    log = []
    flag = [True]
    b = Backlog(size=2)
    b.add(range(10), lambda i, now, out: out.append(i), 0.0, log, alive=lambda: flag[0],
          done=lambda now, out: out.append("done"))
    flag[0] = False
    b.run(1.0, log)
    assert log == [0, 1] and not b.pending()
    whole = Backlog(size=None)
    whole.add(range(10), lambda i, now, out: out.append(i), 0.0, log,
              done=lambda now, out: out.append("done"))
    assert log[2:] == list(range(10)) + ["done"]


# -- the home agent, sliced and unsliced --------------------------------------------------------


def _bce(i, seq=1):
    return BceInfo(A(BASE + i), A(COA + i), BU_H | BU_A, seq, 200, ())


class Twin:
    """One home agent (seeded), fed inputs, with every call's effects kept apart."""

    def __init__(self, size):
        s = HomeAgentSettings(address=ME, home_prefix=PREFIX, peers=(P2, P3), boot_wait=0,
                              max_binding_lifetime=3600)
        self.ha = HomeAgent(s, random.Random(7))
        self.ha.work.size = size
        # Every job and the switch requests in slices of ``size`` (the defaults give the
        # take-over and switch requests larger slices of their own: test_takeover_split.py).
        self.ha.work.sizes = {}
        if size:
            self.ha.switching.slice = size
        self.calls = []
        self.now = 0.0
        self.call(self.ha.start)
        self.seq = 0

    def call(self, fn, *args):
        out = fn(*args, self.now)
        self.calls.append(out)
        return out

    def feed(self, message, src, home_address=None):
        return self.call(self.ha.receive, Inbound(message, src, ME, home_address, None,
                                                  home_address or src))

    def hello(self, peer, lifetime):
        self.seq += 1
        self.feed(HaHello(self.seq, 0, lifetime, 10, 64, peer), peer)

    def run_to(self, t):
        """Tick as the adapter would: at every deadline up to ``t`` (a past one: at once)."""
        while True:
            d = self.ha.next_deadline()
            if d is None or d > t:
                break
            self.now = max(self.now, d)
            self.call(self.ha.tick)
        self.now = t

    def tick_once(self, t):
        self.now = t
        self.call(self.ha.tick)

    def effects(self):
        return [e for out in self.calls for e in out]


def _scenario(size):
    """P2 holds N_BINDINGS primaries (copies here) and dies; P3 asks for everything."""
    t = Twin(size)
    t.hello(P2, 5)
    t.hello(P3, 3600)
    for k in range(0, N_BINDINGS, 20):
        t.feed(BindingInfoUpdate(k + 1, tuple(_bce(i) for i in range(k, k + 20))), P2)
    t.run_to(1.0)
    t.run_to(6.0)  # P2's lifetime runs out: take-over
    t.feed(BindingInfoRequest(4242, (IpAddress(IPADDR_HOME_ADDRESS, A("::")),)), P3)
    t.run_to(6.0)
    return t


def _normalised(effects):
    """Effects other than BIUs, in order; and per destination the BCE entries BIUs carried
    (the take-over packs each slice's publications, so the grouping into BIUs and their random
    identifiers differ between a sliced and an unsliced run, not what they carry)."""
    others, carried = [], {}
    for e in effects:
        if type(e) is Send and type(e.message) is BindingInfoUpdate:
            carried.setdefault(e.dst, set()).update(e.message.entries)
        else:
            others.append(e)
    return others, carried


def test_take_over_and_bulk_answer_sliced_equal_unsliced():
    """Take-over of 1,000 copies and the bulk answer that follows: the sliced home agent's
    effects, concatenated, equal the unsliced one's (BIUs compared by what they carry) and so
    does its cache; it took many calls, none carrying more than one slice of forwarding
    work."""
    whole = _scenario(None)
    sliced = _scenario(50)
    assert _normalised(sliced.effects()) == _normalised(whole.effects())
    assert len(_normalised(whole.effects())[1][P3]) >= N_BINDINGS
    snap = lambda t: sorted((b.home_address, b.care_of, b.sequence, b.primary)  # noqa: E731
                            for b in t.ha.cache)
    assert snap(sliced) == snap(whole)
    assert all(b.primary is None for b in sliced.ha.cache) and len(sliced.ha.cache) == N_BINDINGS
    assert [e.fields["count"] for e in sliced.effects()
            if type(e) is Event and e.name == "take-over"] == [N_BINDINGS]
    installs = [sum(type(e) is InstallRoute for e in out) for out in sliced.calls]
    assert max(installs) <= 50 and sum(n > 0 for n in installs) >= N_BINDINGS // 50
    whole_installs = [sum(type(e) is InstallRoute for e in out) for out in whole.calls]
    assert max(whole_installs) == N_BINDINGS


def test_switch_retransmissions_are_sliced_too():
    """The HASRs of a large take-over are retransmitted at most a slice per call."""
    t = _scenario(50)
    mark = len(t.calls)
    t.run_to(8.5)  # the second HASR retransmissions (2 s after the first) are due
    hasrs = [sum(type(e) is Send and type(e.message) is HaSwitchRequest for e in out)
             for out in t.calls[mark:]]
    assert max(hasrs) <= 50 and sum(hasrs) >= N_BINDINGS


def test_a_binding_changed_between_slices_is_not_taken_over():
    """A copy refreshed by a live primary between two slices keeps that primary: the take-over
    re-checks each binding when its turn comes."""
    t = Twin(10)
    t.hello(P2, 5)
    t.hello(P3, 3600)
    t.feed(BindingInfoUpdate(1, tuple(_bce(i) for i in range(40))), P2)
    t.run_to(4.0)
    t.tick_once(6.0)  # P2 is dead: the first slice of the take-over
    assert t.ha.work.pending()
    last = A(BASE + 39)
    t.feed(BindingInfoUpdate(2, (_bce(39, seq=2),)), P3)  # P3 is primary now
    t.run_to(6.0)
    assert t.ha.cache.get(last).primary == P3
    assert [e.fields["count"] for e in t.effects()
            if type(e) is Event and e.name == "take-over"] == [39]


def test_the_take_over_stops_if_the_peer_comes_back():
    """If the dead peer says HELLO again between slices, the rest of its copies stay copies."""
    t = Twin(10)
    t.hello(P2, 5)
    t.feed(BindingInfoUpdate(1, tuple(_bce(i) for i in range(40))), P2)
    t.run_to(4.0)
    t.tick_once(6.0)
    assert t.ha.work.pending()
    t.hello(P2, 3600)
    t.run_to(6.0)
    primaries = sum(b.primary is None for b in t.ha.cache)
    assert primaries == 10 and not t.ha.work.pending()


def test_mass_expiry_pops_a_slice_per_tick():
    """100 primaries expiring at one instant leave a slice per tick, all of them in the end."""
    t = Twin(30)
    for i in range(100):
        bu = BindingUpdate(1, BU_H | BU_A, 4, (AlternateCareOfAddress(A(COA + i)),))
        t.feed(bu, A(COA + i), home_address=A(BASE + i))
    start = len(t.calls)
    t.run_to(20.0)
    expired = [sum(type(e) is Event and e.name == "binding-expired" for e in out)
               for out in t.calls[start:]]
    assert max(expired) <= 30 and sum(expired) == 100 and len(t.ha.cache) == 0


@pytest.mark.parametrize("size", [None, 7])
def test_bulk_answer_carries_every_binding_once(size):
    """Every primary reaches the requester exactly once before the end marker, sliced or not,
    with BIAs flowing."""
    t = Twin(size)
    t.hello(P3, 3600)
    for i in range(60):
        bu = BindingUpdate(1, BU_H | BU_A, 100, (AlternateCareOfAddress(A(COA + i)),))
        t.feed(bu, A(COA + i), home_address=A(BASE + i))
    # acknowledge everything sent so far, so the window is free
    from haha.wire.mh import BindingInfoAck

    def ack_all():
        for out in list(t.calls):
            for e in out:
                if type(e) is Send and type(e.message) is BindingInfoUpdate and e.dst == P3 \
                        and e.message.identifier not in acked:
                    acked.add(e.message.identifier)
                    t.feed(BindingInfoAck(e.message.identifier, 0), P3)
    acked = set()
    ack_all()
    mark = len(t.calls)
    t.feed(BindingInfoRequest(999, (IpAddress(IPADDR_HOME_ADDRESS, A("::")),)), P3)
    for _ in range(40):
        t.run_to(t.now)
        ack_all()
    bius = [e.message for out in t.calls[mark:] for e in out
            if type(e) is Send and type(e.message) is BindingInfoUpdate]
    carried = [b.home_address for m in bius for b in m.entries]
    assert sorted(carried) == [A(BASE + i) for i in range(60)]
    assert bius[-1].identifier == 999 and bius[-1].entries == ()


def test_sweep_after_a_bulk_answer_runs_in_slices():
    """A bulk answer from P2 that refreshes none of 100 old copies: they are removed at most a
    slice per call, and ``bulk-sync-complete`` reports all 100 after the last slice."""
    t = Twin(30)
    t.feed(BindingInfoUpdate(1, tuple(_bce(i) for i in range(100))), P2)
    assert len(t.ha.cache) == 100
    t.now = 1.0
    t.hello(P2, 3600)  # P2 comes up: we ask it for everything (bulk BIR)
    bir = [e.message for out in t.calls for e in out
           if type(e) is Send and type(e.message) is BindingInfoRequest][-1]
    mark = len(t.calls)
    t.now = 2.0
    t.feed(BindingInfoUpdate(bir.identifier, ()), P2)  # the end marker: nothing refreshed
    sizes = [len(t.ha.cache)]
    while t.ha.work.pending():
        t.call(t.ha.tick)
        sizes.append(len(t.ha.cache))
    complete = [e for out in t.calls[mark:] for e in out
                if type(e) is Event and e.name == "bulk-sync-complete"]
    assert [e.fields["removed"] for e in complete] == [100]
    assert sizes[-1] == 0 and sizes[0] == 70
    assert all(a - b <= 30 for a, b in zip(sizes, sizes[1:]))


def test_take_over_sends_each_slice_packed_even_with_acks_flowing():
    """With BIAs coming back between slices (the window free again each time), a sliced take-
    over of 1,000 bindings still sends full BIUs, not one per binding while the window has
    room: at most 3 BIUs per slice of 50 to the live peer."""
    from haha.wire.mh import BindingInfoAck
    t = Twin(50)
    t.hello(P2, 5)
    t.hello(P3, 3600)
    for k in range(0, N_BINDINGS, 20):
        t.feed(BindingInfoUpdate(k + 1, tuple(_bce(i) for i in range(k, k + 20))), P2)
    t.run_to(4.0)
    acked = set()
    sent = []

    def ack_new():
        for out in list(t.calls):
            for e in out:
                if type(e) is Send and type(e.message) is BindingInfoUpdate and e.dst == P3 \
                        and e.message.identifier not in acked:
                    acked.add(e.message.identifier)
                    sent.append(e.message)
                    t.feed(BindingInfoAck(e.message.identifier, 0), P3)

    t.tick_once(6.0)  # P2 is dead: the take-over starts
    ack_new()
    while t.ha.work.pending():
        t.call(t.ha.tick)
        ack_new()
    carried = {b.home_address for m in sent for b in m.entries}
    assert len(carried) == N_BINDINGS
    assert len(sent) <= 3 * (N_BINDINGS // 50)
