"""Take-over split between the survivors (``take_over_share = "split"``) and paced, bounded
switch requests (haha.core.switching).

On the in-memory network (every packet encoded, ESP on): the primary of every node dies; each
survivor takes its share (decided from the home address, without negotiation) and tells those
nodes; at every instant the network can observe, no node has two primaries, and at the end
every node is registered with the survivor that is its only primary and was told by it. With
the survivors detecting the death at different instants (one hears the dead peer's last HELLO
later), the other survivor's take-over BIUs reach it while it still ranks the dead peer first:
their claims are kept and applied when it too declares the peer dead.

In the core, with many bindings: every slice is bounded by a count of items, first
transmissions of switch requests leave before any retransmission, and the shares of two
survivors are disjoint, complete and even.
"""

import random
from collections import Counter
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.effects import Event, Inbound, Send
from haha.core.homeagent import HomeAgent
from haha.core.settings import HomeAgentSettings, SettingsError
from haha.core.switching import SWITCH_SLICE, TAKE_OVER_SLICE, share_of
from haha.testing import Network
from haha.wire.mh import BU_A, BU_H, BindingInfoUpdate, HaHello, HaSwitchRequest
from haha.wire.options import BceInfo

PREFIX = N("2001:db8:1::/64")
HAS = [A("2001:db8:1::1"), A("2001:db8:1::2"), A("2001:db8:1::3")]
BASE = int(A("2001:db8:1::1:0"))
COA = int(A("2001:db8:99::"))


def hoa(i):
    return A(BASE + i)


# -- the in-memory network ----------------------------------------------------------------------


def _network(seed, n, share="split", ha3_latency=None, **overrides):
    """Three home agents (HA lifetime 3 s, HELLO every second; ``overrides`` to their
    settings), ``n`` nodes registered with ha1 and knowing all three."""
    net = Network(seed=seed)
    has = net.add_home_agents(3, PREFIX, boot_wait=2.0, ha_lifetime=3, hello_interval=1.0,
                              take_over_share=share, **overrides)
    if ha3_latency is not None:
        net.set_links(["ha1"], ["ha3"], both=False, latency=ha3_latency)
    net.run_for(5)
    mns = [net.add_mobile_node(f"mn{i}", home_address=hoa(i), home_agents=HAS)
           for i in range(n)]
    for i, mn in enumerate(mns):
        mn.start(A(COA + i + 1))
    net.run_until_idle(timeout=120)
    assert has[0].machine.cache.primary_count == n
    return net, has, mns


def _watch(net, done, timeout=120.0):
    """Run, one packet or timer at a time, until ``done()``; after every step, no home
    address may be primary at two live home agents. Returns the number of steps."""
    deadline = net.now + timeout
    steps = 0
    while not done():
        assert net._queue and net._queue[0][0] <= deadline, "the network did not settle"
        net.step()
        steps += 1
        twice = [h for h, names in net.primaries().items() if len(names) > 1]
        assert not twice, f"two primaries at t={net.now}: {twice[:3]}"
    return steps


def _kill_and_watch(net, has, timeout=120.0, kill=True):
    """Kill ha1 (unless ``kill`` is False: it is dead already) and :func:`_watch` until both
    survivors have declared a peer dead and every machine is idle."""
    if kill:
        net.kill("ha1")
    return _watch(net, lambda: net.idle() and all(h.events_named("peer-down")
                                                  for h in has[1:]), timeout)


def _assert_served_and_told(net, has, mns):
    """Every node registered with the survivor that is its only primary, that survivor the
    one its share names, and every node told by it (its switch request received)."""
    survivors = has[1:]
    by_address = {h.address: h for h in survivors}
    primaries = net.primaries()
    ranked = sorted(h.identity for h in survivors)  # equal preferences: lowest address first
    for mn in mns:
        m = mn.machine
        assert m.state == "registered"
        holder = by_address[m.home_agent]
        assert primaries[m.home_address] == [holder.name]
        assert holder.identity == ranked[share_of(m.home_address, 2)]
        assert m.counters["switch-received"] >= 1
    assert net.identical_caches()


def test_split_take_over_each_survivor_its_share_never_two_primaries():
    """300 nodes of ha1: ha2 and ha3 each take over their share (together all, about half
    each), send switch requests only to their own, and every node ends registered with the
    survivor its share names, told by it; no node ever has two primaries."""
    net, has, mns = _network(seed=11, n=300)
    steps = _kill_and_watch(net, has)
    assert steps > 1000
    taken = [h.events_named("take-over") for h in has[1:]]
    counts = [sum(e["count"] for e in t) for t in taken]
    assert sum(counts) == 300 and min(counts) >= 100
    sent = [h.machine.counters["switch-sent"] for h in has[1:]]
    assert sent[0] >= counts[0] and sent[1] >= counts[1]
    _assert_served_and_told(net, has, mns)


@pytest.mark.parametrize("seed", [31, 32])
def test_lost_switch_requests_are_repeated_and_never_two_primaries(seed):
    """A third of the survivors' packets to the nodes are lost and the first retransmission
    is capped at 1.5 s: lost switch requests are repeated (counted), every node ends
    registered with the one survivor its share names, told by it, and no node ever has two
    primaries."""
    net, has, mns = _network(seed=seed, n=120, switch_retransmit_cap=1.5)
    net.set_links(["ha2", "ha3"], [f"mn{i}" for i in range(120)], both=False, loss=0.33)
    _kill_and_watch(net, has, timeout=300)
    assert sum(h.machine.counters["switch-retransmitted"] for h in has[1:]) > 0
    net.set_links(["ha2", "ha3"], [f"mn{i}" for i in range(120)], both=False, loss=0.0)
    _watch(net, lambda: net.idle() and all(m.machine.state == "registered" for m in mns), 300)
    _assert_served_and_told(net, has, mns)


def test_first_ranked_take_over_is_unchanged():
    """With the default ``take_over_share`` ("first"), the first-ranked survivor takes every
    node over, the other none."""
    net, has, mns = _network(seed=12, n=60, share="first")
    _kill_and_watch(net, has)
    assert [sum(e["count"] for e in h.events_named("take-over")) for h in has[1:]] == [60, 0]
    assert all(mn.machine.home_agent == HAS[1] for mn in mns)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_split_take_over_when_the_survivors_detect_at_different_instants(seed):
    """ha3 hears ha1 120 ms later than ha2 does, so it declares ha1 dead 120 ms after ha2:
    ha2's take-over BIUs reach ha3 while it still ranks ha1 first, and are refused. They are
    not lost: ha3 keeps the claims and applies them when ha1 dies for it too. The nodes are
    half a second away, so none has re-registered yet: right after ha3's take-over, each
    survivor holds every binding either as its own primary or as a copy naming the other
    (none still naming ha1); never two primaries; at the end every node is served and told."""
    net, has, mns = _network(seed=seed, n=200, ha3_latency=0.12)
    net.set_links(["ha2", "ha3"], [mn.name for mn in mns], latency=0.5)
    net.kill("ha1")
    _watch(net, lambda: has[2].events_named("take-over"), timeout=30)
    end = net.now + 0.01
    _watch(net, lambda: net._queue[0][0] > end)
    assert not any(mn.machine.counters["switch-received"] for mn in mns)
    for me, other in ((has[1], has[2]), (has[2], has[1])):
        primaries = {b.home_address for b in me.machine.cache if b.primary is None}
        others = {b.home_address for b in me.machine.cache if b.primary == other.identity}
        assert len(primaries) + len(others) == 200 and not primaries & others
    assert has[2].machine.counters["claims-applied"] > 50
    _kill_and_watch(net, has, kill=False)
    _assert_served_and_told(net, has, mns)
    assert not has[2].events_named("anti-entropy-repair")


# -- the core, with many bindings ------------------------------------------------------------------


def _survivor(identity, copies, share="split", seed=5):
    """A home agent at ``identity`` holding ``copies`` copies naming HAS[0], whose peers are
    the two other home agents; every peer has said HELLO and is in sync."""
    s = HomeAgentSettings(address=identity, home_prefix=PREFIX,
                          peers=tuple(a for a in HAS if a != identity), boot_wait=0,
                          max_binding_lifetime=3600, take_over_share=share,
                          switch_rate=1e6)
    ha = HomeAgent(s, random.Random(seed))
    ha.start(0.0)
    for k, peer in enumerate(a for a in HAS if a != identity):
        lifetime = 3 if peer == HAS[0] else 3600
        ha.receive(Inbound(HaHello(k + 1, 0, lifetime, 1, 64, peer), peer, identity, None,
                           None, peer), 0.0)
        ha.peers.bulk_answered(peer)  # as if it had answered our bulk request: in sync
    for k in range(0, copies, 24):
        entries = tuple(BceInfo(hoa(i), A(COA + i), BU_H | BU_A, 1, 900, ())
                        for i in range(k, min(copies, k + 24)))
        ha.receive(Inbound(BindingInfoUpdate(k + 1, entries), HAS[0], identity, None, None,
                           HAS[0]), 0.0)
    return ha


def _drive(ha, start, until):
    """Tick ``ha`` at every deadline (a past one at once) from ``start`` to ``until``; the
    effects of each call."""
    calls = []
    now = start
    while True:
        d = ha.next_deadline()
        if d is None or d > until:
            return calls
        now = max(now, d)
        calls.append(ha.tick(now))


def _hasrs(out):
    return [e for e in out if type(e) is Send and type(e.message) is HaSwitchRequest]


def test_shares_of_two_survivors_are_disjoint_complete_and_even():
    """ha2 and ha3, each deciding alone, take over disjoint sets of 20,000 copies whose union
    is all of them, each within 2 % of half."""
    n = 20000
    taken = {}
    for me in HAS[1:]:
        ha = _survivor(me, n)
        _drive(ha, 0.0, 5.0)
        taken[me] = {b.home_address for b in ha.cache if b.primary is None}
    a, b = taken[HAS[1]], taken[HAS[2]]
    assert not a & b and len(a | b) == n
    assert abs(len(a) - n / 2) < n * 0.02
    assert Counter(share_of(hoa(i), 3) for i in range(30000)).most_common()[-1][1] > 9500


def test_take_over_of_many_bindings_in_bounded_slices_hasrs_first():
    """A survivor taking over its share of 20,000 copies: no call carries more than
    TAKE_OVER_SLICE forwarding changes nor more than SWITCH_SLICE switch requests; every node
    of its share gets its first switch request before any is retransmitted."""
    ha = _survivor(HAS[1], 20000)
    calls = _drive(ha, 0.0, 30.0)
    from haha.core.effects import InstallRoute
    installs = [sum(type(e) is InstallRoute for e in out) for out in calls]
    hasrs = [len(_hasrs(out)) for out in calls]
    mine = ha.cache.primary_count
    assert 9000 < mine < 11000
    assert max(installs) <= TAKE_OVER_SLICE and sum(installs) == mine
    assert max(hasrs) <= SWITCH_SLICE
    order = [e.dst for out in calls for e in _hasrs(out)]
    firsts = len(set(order))
    assert firsts == mine
    assert len(set(order[:mine])) == mine  # every first transmission before a retransmission
    assert ha.counters["switch-retransmitted"] > 0


def test_the_take_over_finishes_before_its_switch_requests_go():
    """While the take-over of 10,000 bindings is in slices, the ticks send no switch request
    (but the first of each slice, sent as it is queued): every binding is primary, its route
    installed and its BIU queued within the take-over's own slices; the switch requests
    (at most 64 a tick) follow the last slice, one at least for every node."""
    ha = _survivor(HAS[1], 20000)
    calls, now = [], 0.0
    while True:  # a reactor turn every 5 ms at least: first transmissions fall due meanwhile
        d = ha.next_deadline()
        if d is None or d > 30.0:
            break
        now = max(now + 0.005, d)
        calls.append(ha.tick(now))
    done = next(i for i, out in enumerate(calls)
                if any(type(e) is Event and e.name == "take-over" for e in out))
    during = [len(_hasrs(out)) for out in calls[:done + 1]]
    assert done >= 20000 // TAKE_OVER_SLICE - 1
    assert max(during) <= 1 and sum(during) <= done + 1
    after = [len(_hasrs(out)) for out in calls[done + 1:]]
    assert max(after) <= SWITCH_SLICE
    assert sum(during) + sum(after) >= ha.cache.primary_count > 9000


def test_take_over_share_is_checked():
    """A take_over_share other than 'first' or 'split' is refused naming the field."""
    with pytest.raises(SettingsError, match="take_over_share"):
        HomeAgentSettings(address=HAS[0], home_prefix=PREFIX, take_over_share="half")


def test_take_over_event_counts_only_what_was_taken():
    """A survivor whose share of a dead peer's copies is empty emits no take-over event."""
    ha = _survivor(HAS[1], 0)
    calls = _drive(ha, 0.0, 5.0)
    assert not [e for out in calls for e in out if type(e) is Event and e.name == "take-over"]


# -- retransmission timeout from the nodes' answer times ---------------------------------------------


def _requests(n_first, n_second):
    """A SwitchRequests over a cache of ``n_first + n_second`` primaries (sequence 1)."""
    from collections import Counter as C

    from haha.core.cache import BindingCache
    from haha.core.switching import SwitchRequests

    s = HomeAgentSettings(address=HAS[1], home_prefix=PREFIX, switch_rate=1e6)
    cache = BindingCache()
    for i in range(n_first + n_second):
        cache.store(hoa(i), A(COA + i), BU_H | BU_A, 1, 900, 900.0, (), None, HAS[1], 0.0)
    return SwitchRequests(s, random.Random(3), C(), cache, set()), cache


def _asked(sr, cache, now):
    out = []
    sr.tick(now, out, None)
    return {e.routing_address for e in _hasrs(out)}


def test_retransmission_timeout_follows_the_nodes_answer_time():
    """Ten nodes answer their switch request 2 s after it left (one sample each): the
    timeout becomes SRTT + 4 RTTVAR (over 2 s) instead of 1 s. Ten requests sent at 0.51 s,
    due for retransmission by 1.76 s under the old timeout, are not repeated at 2.05 s (they
    wait for the new estimate), and are once that has passed."""
    sr, cache = _requests(10, 10)
    out = []
    for i in range(10):
        sr.request(cache.get(hoa(i)), HAS[1], 0.0, out)
    assert len(_asked(sr, cache, 0.01)) == 9  # the paced rest of the first ten (1 at once)
    assert sr.rto() == 1.0
    for i in range(10, 20):
        sr.request(cache.get(hoa(i)), HAS[1], 0.5, out)
    assert len(_asked(sr, cache, 0.51)) == 9
    for i in range(10):
        sr.answered(hoa(i), 2.0)
    assert 2.0 < sr.rto() < 3.0
    assert _asked(sr, cache, 2.05) == set()
    assert len(sr.pending) == 10
    late = 0.51 + 1.25 * sr.rto() + 0.01
    first = _asked(sr, cache, late)
    assert first and first <= {hoa(i) for i in range(10, 20)}
    # That timeout, with no answer since, backed the timer off (RFC 6298 5.5): the rest wait
    # for the doubled timeout, then go too.
    assert sr.backoff == 2.0
    rest = _asked(sr, cache, 0.51 + 1.25 * sr.rto() + 0.01)
    assert first | rest == {hoa(i) for i in range(10, 20)}
    assert sr.counters["switch-retransmitted"] == 10


def test_a_retransmitted_request_gives_no_sample():
    """Karn's rule: an answer to a request sent more than once says nothing of the answer
    time; the timeout stays."""
    sr, cache = _requests(1, 0)
    sr.request(cache.get(hoa(0)), HAS[1], 0.0, [])  # sent at once
    assert _asked(sr, cache, 1.3) == {hoa(0)}  # and again
    sr.answered(hoa(0), 5.0)
    assert sr.srtt is None and sr.rto() == 2.0 and not sr.pending  # 1 s, backed off once


def test_unanswered_requests_back_the_timer_off():
    """200 requests sent at once and never answered: they are not all repeated a second
    later. The first timeout doubles the timer; the others wait for it (without the backoff,
    all 200 would go again by 1.25 s), then are repeated too: none is abandoned."""
    sr, cache = _requests(200, 0)
    for i in range(200):
        sr.request(cache.get(hoa(i)), HAS[1], 0.0, [])
    assert len(_asked(sr, cache, 0.01)) == 199
    again = _asked(sr, cache, 1.3)
    assert 0 < len(again) < 20 and sr.backoff == 2.0
    assert again | _asked(sr, cache, 2.6) == {hoa(i) for i in range(200)}


def test_a_lost_first_request_is_repeated_within_the_cap_after_a_long_back_off():
    """Requests timing out with no answer back the timer off (here five times: ``rto`` at
    ``biu_max_timeout``, 32 s); a request sent then and lost is still repeated within
    ``switch_retransmit_cap`` (4 s, up to a quarter more for jitter), not 32 s later."""
    sr, cache = _requests(6, 1)
    now = 0.0
    for i in range(6):  # one request at a time, each timing out unanswered
        sr.request(cache.get(hoa(i)), HAS[1], now, [])
        now += sr.rto() * 1.25 + 0.01
        assert hoa(i) in _asked(sr, cache, now)
    assert sr.backoff >= 32.0 and sr.rto() == 32.0 and sr.first_timeout() == 4.0
    sr.request(cache.get(hoa(6)), HAS[1], now, [])
    assert hoa(6) not in _asked(sr, cache, now + 3.9)
    assert hoa(6) in _asked(sr, cache, now + 1.25 * 4.0 + 0.01)


def test_the_measured_answer_time_is_not_cut_by_the_cap():
    """Answers measured at 20 s (a survivor working through a queue of re-registrations):
    the first retransmission waits for that answer time, above the cap, rather than asking
    every node again while its answer is on its way."""
    sr, cache = _requests(10, 1)
    for i in range(10):
        sr.request(cache.get(hoa(i)), HAS[1], 0.0, [])
    _asked(sr, cache, 0.01)
    for i in range(10):
        sr.answered(hoa(i), 20.0)
    assert sr.first_timeout() == sr.rto() > 20.0
    sr.request(cache.get(hoa(10)), HAS[1], 30.0, [])
    assert _asked(sr, cache, 30.0 + 19.0) == set()


def test_the_cap_is_a_setting():
    """``switch_retransmit_cap`` bounds the backed-off first retransmission as set (here
    2 s against a 16 s back-off), and is checked."""
    with pytest.raises(SettingsError, match="switch_retransmit_cap"):
        HomeAgentSettings(address=HAS[1], home_prefix=PREFIX, switch_retransmit_cap=0)
    sr, cache = _requests(1, 0)
    sr.settings = HomeAgentSettings(address=HAS[1], home_prefix=PREFIX, switch_rate=1e6,
                                    switch_retransmit_cap=2.0)
    sr.backoff = 16.0  # as after four unanswered timeouts
    assert sr.rto() == 16.0 and sr.first_timeout() == 2.0
    sr.request(cache.get(hoa(0)), HAS[1], 0.0, [])
    assert _asked(sr, cache, 2.0 * 1.25 + 0.01) == {hoa(0)}


def test_switch_requests_share_one_message_per_named_home_agent():
    """A take-over's switch requests all name the survivor: they carry one message object
    (built once, not once per node); requests naming different home agents (a drain spreading
    its nodes, or none named) still each name their own."""
    from haha.core.switching import SwitchRequests

    sr, cache = _requests(6, 0)
    assert isinstance(sr, SwitchRequests)
    out = []
    targets = [HAS[1], HAS[1], HAS[2], HAS[1], None, HAS[2]]
    for i, desired in enumerate(targets):
        sr.request(cache.get(hoa(i)), desired, 0.0, out)
    sr.tick(0.5, out, None)  # the paced ones (a microsecond apart)
    sent = [e.message for e in out if type(e) is Send]
    assert all(type(m) is HaSwitchRequest for m in sent)
    named = [m.options[0].address if m.options else None for m in sent]
    assert named == targets
    assert sent[0] is sent[1] and sent[0] is not sent[2]


def test_a_request_whose_answer_waits_in_the_input_queue_is_not_repeated():
    """Twenty requests due for retransmission: the ten whose nodes have a packet waiting in
    the transport's input queue (``waiting``) are not repeated (counted), the ten others
    are; once the queued answers are gone and still nothing was answered, the first ten are
    repeated too, one timeout later."""
    sr, cache = _requests(20, 0)
    queued = {A(COA + i) for i in range(10)}
    sr.waiting = lambda care_of: care_of in queued
    for i in range(20):
        sr.request(cache.get(hoa(i)), HAS[1], 0.0, [])
    _asked(sr, cache, 0.01)
    again = _asked(sr, cache, 1.3) | _asked(sr, cache, 2.6) | _asked(sr, cache, 3.2)
    assert again == {hoa(i) for i in range(10, 20)}
    assert sr.counters["switch-answer-queued"] >= 10
    queued.clear()
    assert {hoa(i) for i in range(10)} <= _asked(sr, cache, 6.0)


def test_an_answer_to_a_switch_request_is_reported_with_its_care_of_address():
    """When a node's Binding Update answers its switch request (a new sequence number), the
    switching's ``on_answered`` hook gets the node's care-of address, within the processing
    of that Binding Update (the service drops the copies still arriving); a refresh of a
    node with no request out, and a repeat of the answer, call nothing."""
    from haha.wire.mh import BindingUpdate
    from haha.wire.options import AlternateCareOfAddress

    ha = _survivor(HAS[1], 400)
    _drive(ha, 0.0, 10.0)
    mine = sorted((b.home_address for b in ha.cache if b.primary is None), key=int)
    seen = []
    ha.switching.on_answered = seen.append
    h = mine[0]
    care_of = ha.cache.get(h).care_of

    def bu(sequence, now):
        m = BindingUpdate(sequence, BU_A | BU_H, 225, (AlternateCareOfAddress(care_of),))
        return ha.receive(Inbound(m, care_of, HAS[1], h, None, h), now)

    assert h in ha.switching
    bu(2, 10.5)
    assert seen == [care_of] and h not in ha.switching
    bu(2, 10.6)  # the same again (a retransmission that got through): no request out
    bu(3, 10.7)  # a later refresh
    assert seen == [care_of]


def test_urgent_while_taking_over_and_while_first_switch_requests_are_behind():
    """``HomeAgent.urgent`` (what the transport asks before giving node traffic any slice)
    is false before the peer dies, true while the take-over is in slices and while paced first
    switch requests are behind (more due than a tick sends: every node told before the
    nodes' answers get slices), and false once only retransmissions are outstanding (those
    alternate with node traffic)."""
    ha = _survivor(HAS[1], 4000)
    assert not ha.urgent(0.0)
    now, seen = 0.0, []
    while True:  # a reactor turn every 5 ms at least, a tick when a deadline is due
        d = ha.next_deadline()
        if d is None or d > 30.0:
            break
        now = max(now + 0.005, d)
        ha.tick(now)
        seen.append((ha.urgent(now), ha.work.has("take-over"), ha.switching.behind(now),
                     ha.switching.get(hoa(0)) is not None or bool(ha.switching)))
    assert all(u == (job or first) for u, job, first, _ in seen)
    assert sum(job for _, job, _, _ in seen) >= 4000 // TAKE_OVER_SLICE - 1
    assert any(first and not job and u for u, job, first, _ in seen)  # behind: urgent
    assert not seen[-1][0] and ha.counters["taken-over"] > 1500
    retransmissions_left = [pending for u, _, _, pending in seen if not u]
    assert any(retransmissions_left)  # requests outstanding, not urgent


# -- relearning: the bulk answer and the sweep in bounded slices --------------------------------------


def test_bulk_answer_of_many_bindings_in_bounded_slices_and_complete():
    """A home agent with 20,000 primaries answers a restarted peer's bulk request: no call
    looks at more than BULK_SLICE cache entries (the request's own call included), every
    primary reaches the requester exactly once, packed to sync_mtu (and every BIU encodes: a
    Mobility Header is at most 2,048 octets), then the end marker."""
    from haha.core.sync.outbound import BULK_SLICE
    from haha.wire.mh import BindingInfoAck, BindingInfoRequest, encode_mh
    from haha.wire.options import IPADDR_HOME_ADDRESS, IpAddress

    me, peer = HAS[1], HAS[2]
    s = HomeAgentSettings(address=me, home_prefix=PREFIX, peers=(peer,), boot_wait=0,
                          max_binding_lifetime=3600, sync_mtu=2100)
    ha = HomeAgent(s, random.Random(9))
    ha.start(0.0)
    ha.receive(Inbound(HaHello(1, 0, 3600, 1, 64, peer), peer, me, None, None, peer), 0.0)
    n = 20000
    for i in range(n):  # its primaries (as registrations would leave them)
        ha.cache.store(hoa(i), A(COA + i), BU_H | BU_A, 1, 900, 900.0, (), None, me, 0.0)

    def items():
        return ha.counters["slice-items.bulk-answer"]

    carried, ended, looked = [], False, []
    before = items()
    out = ha.receive(Inbound(BindingInfoRequest(77, (IpAddress(IPADDR_HOME_ADDRESS, A("::"),
                                                                128),)),
                             peer, me, None, None, peer), 1.0)
    looked.append(items() - before)
    now = 1.0
    for _ in range(10000):
        bius = [e.message for e in out if type(e) is Send
                and type(e.message) is BindingInfoUpdate]
        out = []
        for biu in bius:
            carried.extend(bce.home_address for bce in biu.entries)
            encode_mh(biu, me, peer)  # fits a Mobility Header (raises otherwise)
            ended = ended or (not biu.entries and biu.identifier == 77)
            out += ha.receive(Inbound(BindingInfoAck(biu.identifier, 0), peer, me, None, None,
                                      peer), now)
        if ended:
            break
        d = ha.next_deadline()
        if d is not None and d <= now:
            before = items()
            out += ha.tick(now)
            looked.append(items() - before)
        elif not out:
            now += 0.001
    assert ended and sorted(carried) == sorted(hoa(i) for i in range(n))
    assert max(looked) <= BULK_SLICE and sum(looked) == 2 * n
    assert ha.counters["biu-sent"] <= n / 40 + 2  # 41 bindings a BIU at sync_mtu 2100


def test_control_bindings_rows_are_made_as_they_are_written():
    """The control socket's ``bindings`` rows (streamed a slice per reactor turn) are made
    when taken, in address order, without a snapshot of the whole cache in the first call
    (about 150 ms at 100,000 bindings: a stall the benchmark's probe saw): a binding changed
    after the first row was taken shows as it is now."""
    from types import SimpleNamespace

    from haha.service import HomeAgentService

    ha = _survivor(HAS[1], 0)
    for i in (2, 0, 1):
        ha.cache.store(hoa(i), A(COA + i), BU_H | BU_A, 1, 900, 900.0, (), None, HAS[1], 0.0)

    def no_snapshot():
        raise AssertionError("the whole cache was copied")

    ha.snapshot = no_snapshot
    rows = HomeAgentService.binding_rows(SimpleNamespace(machine=ha))
    first = next(rows)
    ha.cache.store(hoa(2), A(COA + 99), BU_H | BU_A, 2, 900, 900.0, (), None, HAS[1], 0.0)
    rest = list(rows)
    assert [r["home_address"] for r in [first] + rest] == [str(hoa(i)) for i in range(3)]
    assert rest[-1]["care_of"] == str(A(COA + 99)) and rest[-1]["sequence"] == 2
    assert not any(r["copy"] for r in rest)


def test_a_bulk_answer_creates_its_copies_without_an_event_each():
    """The copies a peer's bulk answer creates (entries packed several to a BIU while our
    bulk request is outstanding) raise no copy-created event each: bulk-sync-complete counts
    them. A single-entry BIU meanwhile is an ordinary change and still raises its event."""
    from haha.wire.mh import BindingInfoRequest

    me, peer = HAS[0], HAS[1]
    s = HomeAgentSettings(address=me, home_prefix=PREFIX, peers=(peer,), boot_wait=0)
    ha = HomeAgent(s, random.Random(4))
    ha.start(0.0)
    out = ha.receive(Inbound(HaHello(1, 0, 3600, 1, 64, peer), peer, me, None, None, peer), 0.0)
    bir = [e.message for e in out if type(e) is Send and type(e.message) is BindingInfoRequest]
    assert len(bir) == 1
    entries = tuple(BceInfo(hoa(i), A(COA + i), BU_H | BU_A, 1, 900, ()) for i in range(41))

    def biu(ident, bces):
        return ha.receive(Inbound(BindingInfoUpdate(ident, bces), peer, me, None, None, peer),
                          0.1)

    def named(out, name):
        return [e for e in out if type(e) is Event and e.name == name]

    assert not named(biu(5, entries), "copy-created")
    one = (BceInfo(hoa(99), A(COA + 99), BU_H | BU_A, 1, 900, ()),)
    assert len(named(biu(6, one), "copy-created")) == 1
    done = named(biu(bir[0].identifier, ()), "bulk-sync-complete")
    assert [(e["peer"], e["copied"], e["removed"]) for e in done] == [(peer, 41, 0)]
    assert len(ha.cache) == 42
