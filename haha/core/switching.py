"""Switching and take-over: moving mobile nodes between home agents (draft 5.3, 5.4), sans-IO.

- :class:`SwitchRequests`: the switch requests (HASR, or RFC 5142 Home Agent Switch) a home
  agent has outstanding. First transmissions are paced at ``switch_rate`` per second (a take-over
  of thousands of nodes is spread over seconds instead of leaving in one burst that the nodes
  then answer at once); each request is retransmitted from ``biu_initial_timeout`` doubling up
  to ``biu_max_timeout``, with jitter, :data:`SWITCH_TRIES` times at most, until the node
  re-registers (a new sequence number) or goes elsewhere.
- :func:`take_over`: a peer died and this home agent ranks first among the live ones: its copies
  naming the dead peer become primaries, in slices (:mod:`haha.core.slices`), each announced to
  the peers and followed by a switch request naming this home agent (or, while draining, the
  drain target).
- :func:`hand_back`: address take-over (:mod:`haha.core.addrtakeover`): a peer asks for its
  address back; the bindings served from it go back with it, as BIUs naming the peer.
- :func:`drain_target`: where a draining home agent sends its mobile nodes
  (``settings.drain``).
"""

import heapq
import itertools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

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


class SwitchState:
    """A switch request in progress: ``waiting`` until its paced first transmission, then
    retransmitted until the node re-registers elsewhere or ``SWITCH_TRIES`` are spent."""

    __slots__ = ("desired", "sequence", "timeout", "next_at", "tries", "waiting")

    def __init__(self, desired: Any, sequence: int, timeout: float, next_at: float,
                 waiting: bool) -> None:
        self.desired = desired
        self.sequence = sequence
        self.timeout = timeout
        self.next_at = next_at
        self.tries = 1
        self.waiting = waiting


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
        self._heap: List[Tuple[float, int, Any]] = []  # (next_at, order, home address)
        self._order = itertools.count()  # ties never compare addresses
        self._slot = 0.0  # when the next paced first switch request may leave
        self.drain_cursor = 0

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
        timeout = self.settings.biu_initial_timeout
        at = max(now, self._slot)
        self._slot = at + 1.0 / self.settings.switch_rate
        waiting = at > now
        st = SwitchState(desired, b.sequence, timeout,
                         at if waiting else now + self.jittered(timeout), waiting)
        self.pending[b.home_address] = st
        heapq.heappush(self._heap, (st.next_at, next(self._order), b.home_address))
        if not waiting:
            self._send(b, desired, out)
        else:
            self.counters["switch-paced"] += 1
        out.append(Event(EventName.SWITCH_REQUESTED, home_address=b.home_address, desired=desired))

    def jittered(self, timeout: float) -> float:
        """A retransmission timeout stretched by up to a quarter at random, so requests sent
        together do not come back together (RFC 6275 11.8 asks the same of nodes' BUs)."""
        return timeout * (1.0 + 0.25 * self.rng.random())

    def _send(self, b: Binding, desired: Any, out: List[Any]) -> None:
        hoa = b.home_address
        if self.settings.switch_message == SWITCH_RFC5142:
            msg: Any = HomeAgentSwitch((desired,) if desired is not None else ())
        else:
            opts = (IpAddress(IPADDR_HOME_AGENT, desired, 128),) if desired is not None else ()
            msg = HaSwitchRequest(opts)
        out.append(Send(msg, self.settings.address, b.care_of, routing_address=hoa,
                        protect=hoa))
        self.counters["switch-sent"] += 1

    def cancel(self, home_address: Any) -> None:
        self.pending.pop(home_address, None)

    def cancel_all(self) -> None:
        for hoa in list(self.pending):
            self.cancel(hoa)

    def next_deadline(self) -> Optional[float]:
        heap = self._heap
        for _ in range(64):  # bounded: past that, a stale top only wakes tick early
            if not heap:
                return None
            t, _, hoa = heap[0]
            st = self.pending.get(hoa)
            if st is not None and st.next_at == t:
                return t
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def tick(self, now: float, out: List[Any], limit: Optional[int]) -> None:
        """Send the paced first transmissions and retransmissions due at ``now``, at most
        ``limit`` (None: all); the rest stay due."""
        heap = self._heap
        pending = self.pending
        maximum = self.settings.biu_max_timeout
        sent = 0
        while heap and heap[0][0] <= now and (limit is None or sent < limit):
            t, _, hoa = heapq.heappop(heap)
            sent += 1  # stale items count too: a mass expiry leaves 100,000 of them
            st = pending.get(hoa)
            if st is None or st.next_at != t:
                continue
            b = self.cache.get(hoa)
            if b is None or b.primary is not None or b.sequence != st.sequence:
                del pending[hoa]
                continue
            if st.waiting:  # its paced first transmission
                st.waiting = False
                st.next_at = now + self.jittered(st.timeout)
                heapq.heappush(heap, (st.next_at, next(self._order), hoa))
                self._send(b, st.desired, out)
                continue
            if st.tries >= SWITCH_TRIES:
                del pending[hoa]
                out.append(Event(EventName.SWITCH_UNANSWERED, home_address=hoa, desired=st.desired))
                continue
            st.tries += 1
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


def take_over(ha: "HomeAgent", address: Any, now: float, out: List[Any]) -> None:
    """Peer ``address`` died and ``ha`` ranks first among the live home agents: its copies
    naming ``address`` become ``ha``'s primaries (in slices), each announced to the peers
    and followed by a switch request."""
    cache = ha.cache
    settings = ha.settings
    copies = list(cache.copies_of(address))
    local = ha.takeover.take_over(address, ha.peers, out) or ha.address
    for b in ha.takeover.lingering_of(address, now):
        # A copy that expired before its primary was declared dead (addrtakeover.py).
        if cache.get(b.home_address) is None:
            ha.tombstones.lift(b.home_address)
            copies.append(cache.store(b.home_address, b.care_of, b.flags, b.sequence,
                                      b.lifetime, now + b.lifetime, b.prefixes,
                                      address, None, now))
    if not copies:
        return
    taken = [0]

    def take(b: Binding, now: float, out: List[Any]) -> None:
        if cache.get(b.home_address) is not b or b.primary != address:
            return  # refreshed by another primary, or deleted, since the peer died
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
        ha.counters["taken-over"] += taken[0]
        out.append(Event(EventName.TAKE_OVER, peer=address, count=taken[0]))

    alive: Callable[[], bool] = lambda: ha.serving and address not in ha.peers
    # In slices (haha.core.slices); dropped if the peer comes back or this HA stops.
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
