"""Switching and take-over: moving mobile nodes between home agents (draft 5.3, 5.4), sans-IO.

- :class:`SwitchRequests`: the switch requests (HASR, or RFC 5142 Home Agent Switch) a home
  agent has outstanding. First transmissions are paced at ``switch_rate`` per second (a take-over
  of thousands of nodes is spread over seconds instead of leaving in one burst that the nodes
  then answer at once); each request is retransmitted after a timeout that follows the nodes'
  measured answer time (:meth:`SwitchRequests.rto`: ``biu_initial_timeout`` at first, backed
  off while nothing is answered) doubling up to ``biu_max_timeout``, with jitter,
  :data:`SWITCH_TRIES` times at most, until the node re-registers (a new sequence number) or
  goes elsewhere.
- :func:`take_over`: a peer died and this home agent ranks first among the live ones (or, with
  ``take_over_share`` 'split', it is one of the live ones: it takes the copies whose
  :func:`share_of` is its place in the ranking): its copies naming the dead peer become
  primaries, in slices (:mod:`haha.core.slices`), each announced to the peers and followed by
  a switch request naming this home agent (or, while draining, the drain target).
- :func:`hand_back`: address take-over (:mod:`haha.core.addrtakeover`): a peer asks for its
  address back; the bindings served from it go back with it, as BIUs naming the peer.
- :func:`drain_target`: where a draining home agent sends its mobile nodes
  (``settings.drain``).

A take-over in slices comes first: while it lasts, the home agent's ticks send no switch
request (but the first of a burst, sent when queued), so every binding it takes is primary,
forwarded and announced to the peers within the take-over's own CPU time; its switch
requests follow. Then switch requests leave before anything else the tick has to do: first
transmissions (paced, in a FIFO: their slots only grow) before any retransmission, at most
:attr:`SwitchRequests.slice` per tick: :data:`SWITCH_SLICE` until the daemon has measured what
a tick of them costs, then :data:`SWITCH_BUDGET` (10 ms) worth (:meth:`SwitchRequests.measured`).
While more first transmissions are due than a tick sends (:meth:`SwitchRequests.behind`), the
home agent is urgent (``HomeAgent.urgent``) and its transport holds the nodes' traffic back
(peers' packets still first): a take-over of 100,000 nodes tells them at the pace of the
requests' own cost, not of the nodes' answers, while retransmissions, which only add load
while the nodes' answers are queued, wait.
"""

import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

from haha.wire.addresses import address_int
from haha.wire.mh import HaSwitchRequest, HomeAgentSwitch
from haha.wire.options import IPADDR_HOME_AGENT, IpAddress

from .cache import Binding, BindingCache
from .duties import duties_of, transition
from .effects import Event, Send
from .events import EventName
from .settings import DRAIN_BEST, DRAIN_DISCOVER, SWITCH_RFC5142

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .homeagent import HomeAgent

#: A switch request is sent at most this many times (1 s doubling: about 95 s).
SWITCH_TRIES = 7

#: Switch requests (first transmissions and retransmissions) sent per tick at most, when the
#: home agent works in slices, until the daemon has measured what they cost
#: (:meth:`SwitchRequests.measured`): each costs it 0.05-0.3 ms (deriving the node's SA, ESP,
#: sendto), so a tick stays well under the 50 ms stall goal.
SWITCH_SLICE = 64

#: Seconds of the daemon's (wall-clock) time a tick may spend on switch requests: the count a
#: tick sends is this budget over the measured cost of one (:meth:`SwitchRequests.measured`),
#: within :data:`SWITCH_SLICE_MIN` and :data:`SWITCH_SLICE_MAX`. A budget in time adapts to
#: load where a count did not: 160 a tick held a loaded reactor up to 71 ms, 64 left most
#: of an idle one's time to the nodes' answers while nodes still waited to be told.
SWITCH_BUDGET = 0.010
#: The fewest switch requests a tick sends (when due) whatever they were measured to cost.
SWITCH_SLICE_MIN = 8
#: The most switch requests a tick sends whatever they were measured to cost.
SWITCH_SLICE_MAX = 1024

#: Bindings taken over per slice: a take-over item costs the core tens of microseconds
#: (cache, forwarding effects, the BIU entry queued, the switch request queued: its
#: transmission is paced apart), so 256 stay far below the 50 ms stall goal.
TAKE_OVER_SLICE = 256

_M64 = (1 << 64) - 1


def share_of(home_address: Any, count: int) -> int:
    """Which of ``count`` ranked live home agents takes over ``home_address`` when
    ``take_over_share`` is 'split': its index, from the 128-bit address folded to 64 bits and
    mixed by a multiplicative (Fibonacci) hash, so consecutive addresses spread evenly. Every
    home agent computes the same answer from the same ranking, without any message."""
    x = address_int(home_address)
    x = ((x ^ (x >> 64)) * 0x9E3779B97F4A7C15) & _M64
    return ((x >> 32) * count) >> 32


class SwitchState:
    """A switch request in progress: ``waiting`` until its paced first transmission, then
    retransmitted until the node re-registers elsewhere or ``SWITCH_TRIES`` are spent."""

    __slots__ = ("desired", "sequence", "timeout", "next_at", "tries", "waiting", "sent_at")

    def __init__(self, desired: Any, sequence: int, timeout: float, next_at: float,
                 waiting: bool) -> None:
        self.desired = desired
        self.sequence = sequence
        self.timeout = timeout
        self.next_at = next_at
        self.tries = 1
        self.waiting = waiting
        self.sent_at = 0.0  # when last sent


class SwitchRequests:
    """The switch requests of one home agent, by home address. ``unswitchable`` is the set of
    home addresses whose nodes said they do not know switch requests (never asked again)."""

    def __init__(self, settings: Any, rng: Any, counters: Any, cache: BindingCache,
                 unswitchable: Any) -> None:
        self.settings = settings
        self.rng = rng
        self.counters = counters
        self.cache = cache
        self.unswitchable = unswitchable
        self.pending: Dict[Any, SwitchState] = {}
        # Paced first transmissions, (slot, home address): slots only grow, so a FIFO.
        self._first: Deque[Tuple[float, Any]] = deque()
        self._heap: List[Tuple[float, int, Any]] = []  # retransmissions: (next_at, order, hoa)
        self._order = itertools.count()  # ties never compare addresses
        self._slot = 0.0  # when the next paced first switch request may leave
        # The nodes' answer time (switch request sent once, to the Binding Update that
        # answers it), smoothed as RFC 6298 does for TCP: the retransmission timeout follows
        # it, so a survivor whose queue of re-registrations takes seconds to work through
        # does not ask every node again meanwhile (each repeat costs it, and the node, a
        # packet more while nothing was lost).
        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        # RFC 6298 5.5: a timeout backs the timer off (doubles it) until an answer gives a
        # new sample; here at most once per timeout period, as one timeout speaks for every
        # request sent around the same time.
        self.backoff = 1.0
        self._backed_off_at: Optional[float] = None
        #: Switch requests per tick when the home agent works in slices: SWITCH_SLICE until
        #: :meth:`measured` was told what they cost, then SWITCH_BUDGET's worth.
        self.slice = SWITCH_SLICE
        #: Seconds a tick may spend on switch requests (:meth:`measured`).
        self.budget = SWITCH_BUDGET
        #: The measured seconds per switch request (smoothed), None until measured.
        self.cost: Optional[float] = None
        self.drain_cursor = 0
        #: ``waiting(care_of)``: whether a packet from ``care_of`` waits, unprocessed, in the
        #: input queue of this home agent's transport (the service sets it; None: never). A
        #: request whose node's answer is already here is not repeated.
        self.waiting: Optional[Callable[[Any], bool]] = None
        #: ``on_answered(care_of)``: called when a node's registration from ``care_of``
        #: answers its switch request, within the processing of that (authenticated)
        #: Binding Update (the service sets it: its copies still on their way to this home
        #: agent are dropped unread, haha.io.rxqueue; None: nothing).
        self.on_answered: Optional[Callable[[Any], object]] = None
        self._last_message: Optional[Tuple[Any, Any]] = None  # (desired, its request)

    def measured(self, sent: int, seconds: float) -> None:
        """The daemon spent ``seconds`` (wall clock: load counts) on a tick that sent ``sent``
        switch requests, their SAs, sealing and sending included: the cost per request is
        smoothed (a quarter of each new sample) and the next ticks send :attr:`budget`'s
        worth, within :data:`SWITCH_SLICE_MIN` and :data:`SWITCH_SLICE_MAX`. The tick's other
        work is counted against the requests, so the estimate errs on the short side. The
        core has no clock of its own; without measurements the slice stays as it is."""
        if sent <= 0 or not seconds >= 0:
            return
        sample = seconds / sent
        cost = self.cost
        cost = sample if cost is None else 0.75 * cost + 0.25 * sample
        self.cost = cost
        if cost <= 0:
            self.slice = SWITCH_SLICE_MAX
        else:
            self.slice = max(SWITCH_SLICE_MIN, min(SWITCH_SLICE_MAX, round(self.budget / cost)))

    def first_due(self, now: float) -> bool:
        """Whether a paced first transmission is due at ``now`` (a node not yet told)."""
        first = self._first
        return bool(first) and first[0][0] <= now

    def behind(self, now: float) -> bool:
        """Whether more paced first transmissions are due at ``now`` than one tick sends
        (:attr:`slice`): the oldest has waited longer than the pace takes to make a slice's
        worth due. Then telling nodes is behind its pace and comes before the nodes'
        traffic; while the ticks keep up, the requests due between two of them are only
        the pace's, and the nodes' traffic runs between ticks (holding it then would spin
        the daemon between requests a few at a time)."""
        first = self._first
        return bool(first) and first[0][0] <= now - self.slice / self.settings.switch_rate

    def __bool__(self) -> bool:
        return bool(self.pending)

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, home_address: object) -> bool:
        return home_address in self.pending

    def get(self, home_address: Any) -> Optional[SwitchState]:
        return self.pending.get(home_address)

    def request(self, b: Binding, desired: Any, now: float, out: List[Any]) -> None:
        """Ask the node of ``b`` to switch to ``desired`` (None: let it discover)."""
        if b.home_address in self.unswitchable:
            return
        timeout = self.first_timeout()
        at = max(now, self._slot)
        self._slot = at + 1.0 / self.settings.switch_rate
        waiting = at > now
        st = SwitchState(desired, b.sequence, timeout,
                         at if waiting else now + self.jittered(timeout), waiting)
        self.pending[b.home_address] = st
        if not waiting:
            st.sent_at = now
            heapq.heappush(self._heap, (st.next_at, next(self._order), b.home_address))
            self._send(b, desired, out)
        else:
            self._first.append((at, b.home_address))
            self.counters["switch-paced"] += 1
        out.append(Event(EventName.SWITCH_REQUESTED, home_address=b.home_address, desired=desired))

    def first_timeout(self) -> float:
        """The timeout before a request's first retransmission: :meth:`rto`, but backed off
        at most to ``switch_retransmit_cap`` (or the measured answer time, when that is
        longer): the back-off after unanswered requests doubles up to ``biu_max_timeout``,
        and without this a request lost while nothing was being answered would wait that
        long; the measured answer time itself is never cut (repeating sooner than nodes
        answer only adds load)."""
        base = self._base()
        return min(self.rto(), max(base, self.settings.switch_retransmit_cap))

    def _base(self) -> float:
        s = self.settings
        if self.srtt is None:
            return float(s.biu_initial_timeout)
        return max(s.biu_initial_timeout, self.srtt + 4 * self.rttvar)

    def rto(self) -> float:
        """The first retransmission timeout: ``biu_initial_timeout`` until answers were
        measured, then SRTT + 4 RTTVAR (RFC 6298 2.3), within ``biu_initial_timeout`` and
        ``biu_max_timeout``; times :attr:`backoff` after unanswered requests timed out."""
        return min(self._base() * self.backoff, self.settings.biu_max_timeout)

    def answered(self, home_address: Any, now: float) -> None:
        """The node of ``home_address`` re-registered (a new sequence number): its request is
        done. A request sent once gives a sample of the answer time (Karn: a retransmitted
        one is ambiguous)."""
        st = self.pending.pop(home_address, None)
        if st is None:
            return
        hook = self.on_answered
        if hook is not None:
            b = self.cache.get(home_address)
            if b is not None:
                hook(b.care_of)
        if st.waiting or st.tries != 1:
            return
        sample = now - st.sent_at
        if sample < 0:
            return
        self.backoff = 1.0
        self._backed_off_at = None
        if self.srtt is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample

    def jittered(self, timeout: float) -> float:
        """A retransmission timeout stretched by up to a quarter at random, so requests sent
        together do not come back together (RFC 6275 11.8 asks the same of nodes' BUs)."""
        return timeout * (1.0 + 0.25 * self.rng.random())

    def _message(self, desired: Any) -> Any:
        """The switch request naming ``desired`` (None: none named). Messages are immutable
        records: a take-over sends every node the same one, so the last one is kept."""
        last = self._last_message
        if last is not None and last[0] == desired:
            return last[1]
        if self.settings.switch_message == SWITCH_RFC5142:
            msg: Any = HomeAgentSwitch((desired,) if desired is not None else ())
        else:
            opts = (IpAddress(IPADDR_HOME_AGENT, desired, 128),) if desired is not None else ()
            msg = HaSwitchRequest(opts)
        self._last_message = (desired, msg)
        return msg

    def _send(self, b: Binding, desired: Any, out: List[Any]) -> None:
        hoa = b.home_address
        msg = self._message(desired)
        out.append(Send(msg, self.settings.address, b.care_of, routing_address=hoa,
                        protect=hoa))
        self.counters["switch-sent"] += 1

    def cancel(self, home_address: Any) -> None:
        self.pending.pop(home_address, None)

    def cancel_all(self) -> None:
        for hoa in list(self.pending):
            self.cancel(hoa)

    def next_deadline(self) -> Optional[float]:
        first = self._first
        pending = self.pending
        heap = self._heap
        for _ in range(64):  # bounded: past that, a stale head only wakes tick early
            if not first:
                break
            t, hoa = first[0]
            st = pending.get(hoa)
            if st is not None and st.waiting and st.next_at == t:
                break
            first.popleft()
        for _ in range(64):
            if not heap:
                break
            t, _, hoa = heap[0]
            st = pending.get(hoa)
            if st is not None and not st.waiting and st.next_at == t:
                break
            heapq.heappop(heap)
        due = [q[0][0] for q in (first, heap) if q]
        return min(due) if due else None

    def tick(self, now: float, out: List[Any], limit: Optional[int]) -> None:
        """Send the paced first transmissions and then the retransmissions due at ``now``, at
        most ``limit`` (None: all); the rest stay due. No retransmission leaves while a first
        transmission is due: nodes not yet told come before nodes told once."""
        first = self._first
        heap = self._heap
        pending = self.pending
        maximum = self.settings.biu_max_timeout
        cache = self.cache
        sent = 0
        first_timeout = self.first_timeout() if first else 0.0  # nothing below changes it
        while first and first[0][0] <= now and (limit is None or sent < limit):
            t, hoa = first.popleft()
            sent += 1  # stale items count too
            st = pending.get(hoa)
            if st is None or not st.waiting or st.next_at != t:
                continue
            b = cache.get(hoa)
            if b is None or b.primary is not None or b.sequence != st.sequence:
                del pending[hoa]
                continue
            st.waiting = False
            st.sent_at = now
            st.timeout = max(st.timeout, first_timeout)
            st.next_at = now + self.jittered(st.timeout)
            heapq.heappush(heap, (st.next_at, next(self._order), hoa))
            self._send(b, st.desired, out)
        if first and first[0][0] <= now:
            return  # first transmissions still due: retransmissions wait
        while heap and heap[0][0] <= now and (limit is None or sent < limit):
            t, _, hoa = heapq.heappop(heap)
            sent += 1  # stale items count too: a mass expiry leaves 100,000 of them
            st = pending.get(hoa)
            if st is None or st.waiting or st.next_at != t:
                continue
            b = cache.get(hoa)
            if b is None or b.primary is not None or b.sequence != st.sequence:
                del pending[hoa]
                continue
            if st.tries == 1 and now < st.sent_at + self.first_timeout():
                # Answers have been slower than this request's timeout foresaw: wait for
                # the current estimate (within the cap) before asking again.
                st.timeout = self.first_timeout()
                st.next_at = st.sent_at + self.jittered(st.timeout)
                heapq.heappush(heap, (st.next_at, next(self._order), hoa))
                continue  # (counted in the slice: bounded work per tick)
            waiting = self.waiting
            if waiting is not None and waiting(b.care_of):
                # The node's answer is in our input queue, not yet processed: asking again
                # would only add to the queue. Looked at again one timeout later.
                st.next_at = now + self.jittered(st.timeout)
                heapq.heappush(heap, (st.next_at, next(self._order), hoa))
                self.counters["switch-answer-queued"] += 1
                continue
            if st.tries >= SWITCH_TRIES:
                del pending[hoa]
                out.append(Event(EventName.SWITCH_UNANSWERED, home_address=hoa, desired=st.desired))
                continue
            if st.tries == 1 and (self._backed_off_at is None
                                  or now >= self._backed_off_at + self.rto()):
                # A first timeout with no answer measured since: back the timer off.
                self.backoff = min(self.backoff * 2, 64.0)
                self._backed_off_at = now
            st.tries += 1
            st.sent_at = now
            st.timeout = min(st.timeout * 2, maximum)
            st.next_at = now + self.jittered(st.timeout)
            heapq.heappush(heap, (st.next_at, next(self._order), hoa))
            self._send(b, st.desired, out)
            self.counters["switch-retransmitted"] += 1


def drain_target(ha: "HomeAgent") -> Any:
    """The home agent address a draining ``ha`` names in its next switch request (None: the
    node discovers one): the best-ranked peer, or the peers in turn, as ``settings.drain``
    says."""
    others = [a for a, _ in ha.ranked() if a != ha.identity]
    if not others or ha.settings.drain == DRAIN_DISCOVER:
        return None
    if ha.settings.drain == DRAIN_BEST:
        address = others[0]
    else:
        switching = ha.switching
        address = others[switching.drain_cursor % len(others)]
        switching.drain_cursor += 1
    return ha.peers.entry(address).home_agent


def take_over(ha: "HomeAgent", address: Any, now: float, out: List[Any],
              share: Optional[Tuple[int, int]] = None) -> None:
    """Peer ``address`` died and ``ha`` ranks first among the live home agents: its copies
    naming ``address`` become ``ha``'s primaries (in slices), each announced to the peers
    and followed by a switch request. With ``share`` ``(index, count)`` (``take_over_share``
    'split'), only the copies whose :func:`share_of` over ``count`` is ``index``: the others
    are the other survivors' to take."""
    cache = ha.cache
    settings = ha.settings
    key = address_int(address)
    # The cache's entries as they are now (a list of references: C speed, no per-entry work
    # in this call); which are copies of the dead peer, and ours to take, is decided lazily,
    # a slice at a time.
    snapshot: List[Binding] = list(cache)
    lingering: List[Binding] = []
    local = ha.takeover.take_over(address, ha.peers, out) or ha.address
    for b in ha.takeover.lingering_of(address, now):
        # A copy that expired before its primary was declared dead (addrtakeover.py).
        if cache.get(b.home_address) is None and (
                share is None or share_of(b.home_address, share[1]) == share[0]):
            ha.tombstones.lift(b.home_address)
            lingering.append(cache.store(b.home_address, b.care_of, b.flags, b.sequence,
                                         b.lifetime, now + b.lifetime, b.prefixes,
                                         address, None, now))
    if share is None:
        def ours(b: Binding) -> bool:
            p = b.primary
            return p is not None and address_int(p) == key
    else:
        index, count = share

        def ours(b: Binding) -> bool:
            p = b.primary
            return p is not None and address_int(p) == key and \
                share_of(b.home_address, count) == index
    copies = itertools.chain(lingering, snapshot)
    taken = [0]

    def take(b: Binding, now: float, out: List[Any]) -> None:
        if not ours(b) or cache.get(b.home_address) is not b:
            return  # another's, or refreshed by another primary or deleted since it died
        old = duties_of(settings, b)
        b = cache.store(b.home_address, b.care_of, b.flags, b.sequence, b.lifetime,
                        b.expires, b.prefixes, None, local, now)
        transition(b.home_address, old, duties_of(settings, b), out)
        ha.sync.publish(b, now, out, batch=True)  # sent packed at the end of the slice
        # A draining home agent still takes over (nobody else would: it may rank first
        # in its peers' view), then passes the nodes on as its drain says.
        desired = ha.address if not ha.draining else drain_target(ha)
        ha.switching.request(b, desired, now, out)
        taken[0] += 1

    def done(now: float, out: List[Any]) -> None:
        if not taken[0]:
            return  # nothing of the dead peer's was ours (or still its) to take
        ha.counters["taken-over"] += taken[0]
        out.append(Event(EventName.TAKE_OVER, peer=address, count=taken[0]))

    alive: Callable[[], bool] = lambda: ha.serving and address not in ha.peers
    # In slices (haha.core.slices); dropped if the peer comes back or this HA stops. Every
    # entry of the snapshot is an item, so a slice is bounded whatever the share of the
    # dead peer's copies in the cache (an entry that is not ours costs a test).
    ha.work.add(copies, take, now, out, name="take-over", done=done,
                after=ha.sync.flush, alive=alive)


def hand_back(ha: "HomeAgent", peer: Any, identifier: int, address: Any, now: float,
              out: List[Any]) -> None:
    """Peer ``peer`` asks for its home agent ``address`` back (address take-over): stop
    holding it and give back, as BIUs naming ``peer``, the bindings served from it."""
    released = ha.takeover.requested(peer, identifier, address, out)
    if released is False:
        return
    if released is not None:
        given = []
        cache = ha.cache
        for b in cache.primaries():
            if b.local == released:
                old = duties_of(ha.settings, b)
                ha.switching.cancel(b.home_address)
                b = cache.store(b.home_address, b.care_of, b.flags, b.sequence,
                                b.lifetime, b.expires, b.prefixes, peer, None, now, b)
                transition(b.home_address, old, duties_of(ha.settings, b), out)
                ha.sync.withdraw(b.home_address, now, out)
                given.append(b)
        ha.sync.give_back(peer, given, now, out)
        out.append(Event(EventName.BINDINGS_HANDED_BACK, to=peer, count=len(given)))
        ha.check_drained(out)
    ha.takeover.confirm(peer, identifier, address, out)
