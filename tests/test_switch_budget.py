"""First switch requests before node traffic, in ticks sized by a time budget.

- In the core (haha.core.switching): a tick sends ``SwitchRequests.slice`` switch requests at
  most; :meth:`SwitchRequests.measured` (what the daemon measured a tick to cost) makes that
  count :data:`SWITCH_BUDGET`'s worth, within :data:`SWITCH_SLICE_MIN` and
  :data:`SWITCH_SLICE_MAX`, smoothed.
- In the daemon's glue (haha.service): each firing of the adapter's timer that sent switch
  requests is timed and reported; the home agent's input queue holds node traffic entirely
  while first switch requests are behind their pace (peers' packets still first),
  haha.io.rxqueue (the service's wiring: tests/test_io_rxqueue.py).
"""

import random
from collections import Counter
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N
from types import SimpleNamespace


from haha.core.cache import BindingCache
from haha.core.effects import Send
from haha.core.settings import HomeAgentSettings
from haha.core.switching import (SWITCH_BUDGET, SWITCH_SLICE, SWITCH_SLICE_MAX, SWITCH_SLICE_MIN,
                                 SwitchRequests)
from haha.io.rxqueue import InputQueue
from haha.service import _measure_switch_ticks
from haha.wire.mh import BU_A, BU_H, HaSwitchRequest
from test_io_rxqueue import PEER, PEER_SPI, _timed_queue, esp, node
from test_io_udp import _turn
from test_takeover_split import _hasrs, _survivor

PREFIX = N("2001:db8:1::/64")
HA = A("2001:db8:1::2")
BASE = int(A("2001:db8:1::1:0"))
COA = int(A("2001:db8:99::"))


def _requests(n):
    """A SwitchRequests over ``n`` primaries, every one asked to switch at 0 (first
    transmissions paced at 1,000,000 a second: all due by 0.01)."""
    s = HomeAgentSettings(address=HA, home_prefix=PREFIX, switch_rate=1e6)
    cache = BindingCache()
    for i in range(n):
        cache.store(A(BASE + i), A(COA + i), BU_H | BU_A, 1, 900, 900.0, (), None, HA, 0.0)
    sr = SwitchRequests(s, random.Random(3), Counter(), cache, set())
    for i in range(n):
        sr.request(cache.get(A(BASE + i)), HA, 0.0, [])
    return sr


def _sent(sr, now):
    out = []
    sr.tick(now, out, sr.slice)
    return [e for e in out if type(e) is Send and type(e.message) is HaSwitchRequest]


# -- the core: the count a tick sends follows the measured cost ---------------------------------


def test_the_slice_is_the_budgets_worth_of_measured_requests():
    """Unmeasured, a tick sends SWITCH_SLICE requests. Measured at 50 us each, the next tick
    sends SWITCH_BUDGET / 50 us of them (200 at 10 ms); measured slower later, fewer (the
    estimate moves a quarter of the way to each new sample)."""
    sr = _requests(2000)
    assert sr.cost is None and sr.slice == SWITCH_SLICE
    assert len(_sent(sr, 0.01)) == SWITCH_SLICE
    sr.measured(SWITCH_SLICE, SWITCH_SLICE * 50e-6)
    assert abs(sr.cost - 50e-6) < 1e-12
    assert sr.slice == round(SWITCH_BUDGET / 50e-6) == 200
    assert len(_sent(sr, 0.02)) == 200
    sr.measured(100, 100 * 250e-6)  # the machine got busy: 250 us each
    assert abs(sr.cost - 100e-6) < 1e-12  # 0.75 * 50 + 0.25 * 250
    assert sr.slice == 100
    assert len(_sent(sr, 0.03)) == 100


def test_the_slice_stays_within_its_bounds_and_ignores_empty_measurements():
    """However cheap or dear requests are measured to be, a tick sends between
    SWITCH_SLICE_MIN and SWITCH_SLICE_MAX; a tick that sent nothing, or a negative
    duration (a clock stepping back), changes nothing."""
    sr = _requests(10)
    sr.measured(0, 1.0)
    sr.measured(5, -1.0)
    assert sr.cost is None and sr.slice == SWITCH_SLICE
    sr.measured(1, 1.0)  # one request took a second (a machine stopped meanwhile)
    assert sr.slice == SWITCH_SLICE_MIN
    fast = _requests(10)
    fast.measured(1000, 0.0)
    assert fast.slice == SWITCH_SLICE_MAX
    fast.measured(1000, 1e-6)
    assert fast.slice == SWITCH_SLICE_MAX


def test_a_measured_survivor_tells_its_nodes_in_fewer_ticks():
    """A survivor taking 10,000 of 20,000 copies over, told its switch requests cost 40 us
    each (a 10 ms budget: 250 a tick), sends up to 250 first requests a tick where an
    unmeasured one sends 64, and tells every node of its share in about a quarter of the ticks
    that follow the take-over."""
    counts = []
    for cost in (None, 40e-6):
        ha = _survivor(HA, 20000)
        if cost is not None:
            ha.switching.measured(1, cost)
        hasrs, now = [], 0.0
        while True:  # a reactor turn every 5 ms at least: thousands fall due meanwhile
            d = ha.next_deadline()
            if d is None or d > 30.0:
                break
            now = max(now + 0.005, d)
            hasrs.append(len(_hasrs(ha.tick(now))))
        mine = ha.cache.primary_count
        firsts = ticks = 0
        for n in hasrs:  # the take-over's ticks send one at most: counted in firsts only
            if firsts >= mine:
                break
            firsts += n
            ticks += n > 1
        counts.append((max(hasrs), ticks, mine))
    (unmeasured, slow, mine), (measured, fast, _) = counts
    assert unmeasured == SWITCH_SLICE and measured == 250
    assert slow >= mine // SWITCH_SLICE and fast <= mine // 250 + 2
    assert fast * 3 < slow


def test_behind_only_when_more_are_due_than_a_tick_sends():
    """At 1,000 first requests a second and 64 a tick, 30 due is keeping pace (not behind:
    node traffic runs between ticks), 70 due is behind (node traffic waits); a tick of 64
    brings it back within its pace. ``HomeAgent.urgent`` follows ``behind``, not merely
    ``first_due``."""
    s = HomeAgentSettings(address=HA, home_prefix=PREFIX, switch_rate=1000.0)
    cache = BindingCache()
    sr = SwitchRequests(s, random.Random(3), Counter(), cache, set())
    for i in range(200):
        b = cache.store(A(BASE + i), A(COA + i), BU_H | BU_A, 1, 900, 900.0, (), None, HA, 0.0)
        sr.request(b, HA, 0.0, [])  # the first at once, the others 1 ms apart
    assert sr.first_due(0.030) and not sr.behind(0.030)
    assert sr.behind(0.070)
    assert len(_sent(sr, 0.070)) == 64
    assert sr.first_due(0.070) and not sr.behind(0.070)
    ha = _survivor(HA, 0)
    ha.switching = sr
    assert not ha.urgent(0.030) and ha.urgent(0.140)


# -- the daemon's glue ------------------------------------------------------------------------------


def test_the_daemon_times_each_tick_that_sent_switch_requests():
    """The service's wrapper around the adapter's timer: a firing that sent 20 switch
    requests in 2 ms (a fake timer) reports 100 us each to the machine's switching (its next
    ticks send 100); a firing that sent none reports nothing."""
    sr = _requests(0)
    counters = Counter()
    machine = SimpleNamespace(switching=sr, counters=counters)
    now = [0.0]
    fired = []

    def fire(sent, seconds):
        def f():
            fired.append(sent)
            counters["switch-sent"] += sent
            now[0] += seconds
        return f

    adapter = SimpleNamespace(_fire=fire(20, 0.002))
    _measure_switch_ticks(machine, adapter, timer=lambda: now[0])
    adapter._fire()
    assert fired == [20] and abs(sr.cost - 100e-6) < 1e-12 and sr.slice == 100
    adapter2 = SimpleNamespace(_fire=fire(0, 0.5))
    _measure_switch_ticks(machine, adapter2, timer=lambda: now[0])
    adapter2._fire()
    assert fired == [20, 0] and abs(sr.cost - 100e-6) < 1e-12 and sr.slice == 100


def _held_queue(cost=0.001):
    """test_io_rxqueue's timed queue, holding node traffic while urgent (the home agent's)."""
    q, got, r = _timed_queue(cost)
    q.hold_while_urgent = True
    return q, got, r


def test_node_traffic_waits_entirely_while_urgent_peers_still_go():
    """With ``hold_while_urgent`` (the home agent's queue) no node packet is processed while
    ``urgent()`` is true (counted ``slices_held``), peers' packets still are, and the queue
    comes back after each turn of the reactor; once the urgent work is done, node traffic
    gets full slices and every packet arrives in order."""
    q, got, r = _held_queue()
    busy = [True]
    q.urgent = lambda: busy[0]
    nodes = [esp(node(i), 1) for i in range(30)]
    for p in nodes:
        q.put(p, None)
    hellos = [esp(PEER, k, spi=PEER_SPI) for k in range(1, 4)]
    for h in hellos:
        q.put_peer(h, None)
    q.run()
    assert got == hellos and q.counters["slices_held"] == 1
    _turn(r)
    _turn(r)
    late = esp(PEER, 9, spi=PEER_SPI)
    q.put_peer(late, None)
    q.run()
    assert got == hellos + [late] and q.counters["slices_held"] == 3
    assert len(q.queue) == 30 and r.getDelayedCalls()  # it comes back
    busy[0] = False
    _turn(r)
    assert got[4:] == nodes[:20]
    while q.queue:
        _turn(r)
    assert got[4:] == nodes and q.counters["slices_yielded"] == 0


def test_without_a_reactor_held_node_traffic_is_still_processed_at_once():
    """A queue that cannot schedule (no ``call_later``: everything at once) ignores the hold
    as it ignores ``urgent``: it could not come back for what it held."""
    got = []
    q = InputQueue(lambda data, meta: got.append(data), None)
    q.hold_while_urgent = True
    q.urgent = lambda: True
    for i in range(30):
        q.put(esp(node(i), 1), None)
    q.run()
    assert len(got) == 30 and not q.queue and q.counters["slices_held"] == 0


def test_clearing_a_held_queue_cancels_its_next_look():
    """A transport that stops while node traffic is held (``clear``) leaves no scheduled
    look behind, and nothing is delivered after it."""
    q, got, r = _held_queue()
    q.urgent = lambda: True
    for i in range(5):
        q.put(esp(node(i), 1), None)
    q.run()
    assert q.counters["slices_held"] == 1 and r.getDelayedCalls()
    q.clear()
    assert not [c for c in r.getDelayedCalls() if c.active()] and not q.queue and not got


def test_urgent_work_arriving_with_a_packet_stops_held_node_traffic_at_once():
    """A node packet whose processing makes the receiver urgent (the BIU that starts a
    take-over) is the last node packet of its slice when node traffic is held while urgent;
    without the hold the slice runs on to ``urgent_slice_seconds`` (two packets)."""
    for hold, expected in ((True, 1), (False, 2)):
        q, got, r = _held_queue()
        q.hold_while_urgent = hold
        q.urgent = lambda: bool(got)
        for i in range(50):
            q.put(esp(node(i), 1), None)
        q.run()
        assert len(got) == expected


def test_a_built_home_agent_service_measures_its_switch_request_ticks():
    """``HomeAgentService.build`` installs the timing: after its timer fires with paced
    first switch requests due, the machine's switching has a measured cost per request and
    a slice sized from it."""
    from twisted.internet.task import Clock

    from haha.backends.null import NullBackend
    from haha.config import home_agent_from_text
    from haha.service import HomeAgentService

    config = home_agent_from_text(
        "[home-agent]\naddress = 2001:db8:1::2\nhome-prefix = 2001:db8:1::/64\n"
        "home-interface = eth0\nswitch-rate = 1000\n[security]\nmode = none\nlab = yes\n"
        "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n", "ha.conf")
    clock = Clock()
    service = HomeAgentService.build(config, clock, backend=NullBackend())
    machine = service.machine
    machine.start(0.0)
    for i in range(20):
        b = machine.cache.store(A(BASE + i), A(COA + i), BU_H | BU_A, 1, 900, 900.0, (), None,
                                HA, 0.0)
        machine.switching.request(b, HA, 0.0, [])  # one at once, 19 paced 1 ms apart
    assert machine.counters["switch-sent"] == 1 and machine.switching.cost is None
    clock.advance(0.05)
    service.adapter._fire()
    assert machine.counters["switch-sent"] == 20
    assert machine.switching.cost is not None and machine.switching.cost > 0
    assert SWITCH_SLICE_MIN <= machine.switching.slice <= SWITCH_SLICE_MAX
