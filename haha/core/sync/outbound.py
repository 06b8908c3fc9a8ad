"""Binding synchronisation between home agents (draft 5.1, 5.2; docs/protocol.md 6.1, 6.3, 6.5).

One :class:`PeerSync` per live peer keeps what this home agent still owes it:

- ``outstanding``: BIUs sent and not yet acknowledged, by identifier (random, non-zero, unique
  per peer, so a BIA matches exactly one; docs/protocol.md 6.1). Each is retransmitted with
  exponential back-off (its first timeout doubling up to ``biu_max_timeout``) until its BIA
  arrives or the peer is declared dead.
- The first timeout follows the peer's measured answer time (RFC 6298 applied to BIAs): SRTT +
  4 RTTVAR of the BIAs of BIUs sent once (Karn's rule), within ``biu_initial_timeout`` and
  ``biu_max_timeout``. A peer whose backlog makes it answer in seconds (a restarted home agent
  taking a bulk answer on a loaded machine) is then not sent every outstanding BIU again
  meanwhile, which doubled its work and its backlog. A timeout doubles the peer's timeout for
  new BIUs, once per loss event, until a BIA of a BIU sent once is measured again (RFC 6298
  5.5).
- The window follows the peer's answer time: a BIA measured later than :attr:`Sync.target`
  (an eighth of the failure detection time) halves the peer's window (once per round trip,
  down to one BIU), as does a timeout; each BIA measured in time grows it by one BIU per
  window's worth of BIAs, up to ``biu_window``. What a home agent has not yet read waits in
  its input queue with the peers' HELLOs: a restarted home agent taking two full windows of
  bulk answers on a loaded machine would read HELLOs seconds late, and its peers would
  declare it dead. The window keeps that queue within the target.
- Fast retransmission: a peer answers BIUs in the order they arrive (one socket, peers first
  in its input queue), so a BIU still unacknowledged when :data:`FAST_RETRANSMIT` BIUs sent
  after it have been acknowledged was lost: it is sent again at once (once; then its timer),
  instead of holding the end of a bulk answer for a timeout.
- Coalescing: a binding is carried by at most one outstanding BIU per peer. A newer change takes
  the binding out of the older BIU (which is dropped when it empties) and goes out at once in a
  new one, so a retransmission never carries stale state.
- A window: at most ``biu_window`` BIUs outstanding per peer, fewer while the peer answers
  slowly (below). Further changes wait in
  ``pending`` (newest state per binding, first-come order) and leave, packed as many per BIU as
  ``sync_mtu`` allows, as acknowledgements free the window.
- Bulk answers (docs/protocol.md 6.5): every primary binding is queued, and so are the copies that
  name the requester as their primary (it restarted and lost them), in BIUs carrying an IP
  Address option (sub-type 3, Home Agent Address) that names it; once every BIU queued up to
  that point has been acknowledged, an *end marker* (a BIU with no entries carrying the
  request's identifier) is sent, reliably too. The requester retransmits its BIR until the end
  marker arrives, then drops the copies naming that peer which the answer did not refresh.
  (Chunks carry their own identifiers so that each BIA matches one chunk; see docs/core.md.)
  A BIR repeating the identifier of a bulk request answered in the last ``biu_max_timeout``
  seconds is not answered again: the requester sent it before our end marker reached it (the
  marker's BIA says it did). Answering it again sent a restarted home agent on a loaded
  machine its 100,000 bindings once per retransmission of its request.
- ``requests``: BIRs sent to the peer, retransmitted like BIUs; a single-binding request gives
  up after :data:`SINGLE_RETRIES` retransmissions (nobody may be primary for it).

Retransmission timers: first transmissions in a FIFO (their deadlines come in order), the rest
in a heap; both with lazy deletion.
"""

import heapq
from collections import OrderedDict, deque
from itertools import chain, repeat
from ipaddress import IPv6Address
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

from haha.wire.addresses import address_int
from haha.wire.mh import BindingInfoRequest, BindingInfoUpdate
from haha.wire.options import (
    IPADDR_HOME_ADDRESS,
    IPADDR_HOME_AGENT,
    BceInfo,
    IpAddress,
    MobileNetworkPrefix,
)

from haha.wire.records import maker
from ..effects import make_send
from ..seqnum import units_ceil

UNSPECIFIED = IPv6Address(0)
SINGLE_RETRIES = 3

#: BIUs sent later and acknowledged that make an unacknowledged BIU lost (module docstring).
FAST_RETRANSMIT = 3

#: RFC 6298 2.3's gains.
_ALPHA = 0.125
_BETA = 0.25

#: Cache entries looked at per slice of a bulk answer (haha.core.slices): queueing one costs
#: a few microseconds, passing over one that is not sent (a copy) well under one, so a slice
#: stays around 10 ms; at the default slice of 32, node traffic handled between two slices
#: held a 100,000-binding answer to about 1,600 entries a second.
BULK_SLICE = 1024

#: The barrier of a bulk answer still being queued: later than any serial, so no end marker
#: leaves before the last binding is queued.
_QUEUEING = float("inf")

# Octets of a BIU outside its BCE options: IPv6 header 40, worst-case ESP (header 8, IV 8,
# padding 3, trailer 2, ICV 16) 37, Mobility Header with the identifier 8.
_OVERHEAD = 40 + 37 + 8
_ENTRY = 48  # a BCE Information option with its alignment padding
_PREFIX = 24  # a Mobile Network Prefix option with its alignment padding

Effects = List[Any]
#: A timer item: (due, 0 for a BIU or 1 for a BIR, peer address, identifier).
Timer = Tuple[float, int, Any, int]

_bce = maker(BceInfo)
_biu = maker(BindingInfoUpdate)


def _owner_options(owner: Any) -> Tuple[Any, ...]:
    """The BIU options naming ``owner`` as the primary of the entries (None: the sender)."""
    if owner is None:
        return ()
    return (IpAddress(IPADDR_HOME_AGENT, owner, 128),)


def entry_size(bce: BceInfo) -> int:
    """Octets ``bce`` takes in a BIU (the option, its prefixes, their padding)."""
    return _ENTRY + _PREFIX * len(bce.prefixes)


class Outstanding:
    """A BIU waiting for its BIA."""

    __slots__ = ("identifier", "entries", "serial", "timeout", "next_at", "marker", "owner",
                 "sent", "resent", "order", "fast")

    def __init__(self, identifier: int, entries: Dict[int, Tuple[BceInfo, Optional[float]]],
                 serial: float, timeout: float, next_at: float, marker: bool = False,
                 owner: Any = None) -> None:
        self.identifier = identifier
        self.entries = entries  # home address -> (BceInfo, expires or None for a deletion)
        self.serial = serial
        self.timeout = timeout
        self.next_at = next_at
        self.marker = marker
        self.owner = owner  # None: this home agent is the primary; else the named primary
        self.sent = 0.0  # when first sent
        self.resent = False  # retransmitted: its BIA measures nothing (Karn's rule)
        self.order = 0  # its place among the BIUs first sent to the peer
        self.fast = False  # sent again by fast retransmission


class Request:
    """A BIR waiting for its answer. ``target`` is None for a bulk request."""

    __slots__ = ("identifier", "target", "started", "timeout", "next_at", "tries")

    def __init__(self, identifier: int, target: Any, started: float, timeout: float,
                 next_at: float) -> None:
        self.identifier = identifier
        self.target = target
        self.started = started
        self.timeout = timeout
        self.next_at = next_at
        self.tries = 0


class PeerSync:
    """What this home agent owes one live peer."""

    __slots__ = ("address", "outstanding", "carrying", "pending", "serial", "answering",
                 "requests", "srtt", "rttvar", "backoff", "backed_off", "sent_order",
                 "acked_order", "answered", "window", "shrunk")

    def __init__(self, address: Any) -> None:
        self.address = address
        # Bindings are keyed by their home address as an int (cheaper to hash than an address).
        self.outstanding: Dict[int, Outstanding] = {}
        # home address -> identifier of the outstanding BIU carrying it
        self.carrying: Dict[int, int] = {}
        # home address -> (BceInfo, expires, serial, owner), in arrival order. An OrderedDict:
        # entries leave from the front, and a plain dict would make every walk from its start
        # skip the slots of all entries deleted so far (O(N^2) over a bulk answer).
        self.pending: 'OrderedDict[int, Tuple[BceInfo, Optional[float], float, Any]]' = \
            OrderedDict()
        self.serial = 0
        self.answering: Dict[int, float] = {}  # bulk request identifier -> barrier serial
        self.requests: Dict[int, Request] = {}
        #: The peer's answer time (RFC 6298): smoothed round trip of BIU to BIA and its
        #: variation (None until one is measured), and the factor a timeout doubled.
        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        self.backoff = 1
        self.backed_off = float("-inf")  # when the backoff last doubled
        self.sent_order = 0  # BIUs first sent so far (Outstanding.order)
        self.acked_order = -1  # the latest-sent BIU acknowledged
        # bulk request identifier -> when the end marker of our answer was acknowledged
        self.answered: Dict[int, float] = {}
        self.window = 0.0  # BIUs that may be outstanding (0: not set yet; see Sync.window)
        self.shrunk = float("-inf")  # when the window last shrank

    def measured(self, rtt: float) -> None:
        """A BIA of a BIU sent once arrived ``rtt`` seconds after it (RFC 6298 2.2, 2.3)."""
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - rtt)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * rtt
        self.backoff = 1

    def timed_out(self, o: "Outstanding", now: float) -> None:
        """``o`` was not acknowledged in time: double the timeout of new BIUs and halve the
        window, once for all the BIUs sent before this (a window timing out together is one
        loss event)."""
        if o.sent >= self.backed_off and self.backoff < 64:
            self.backoff *= 2
            self.backed_off = now
        self.shrink(o, now)

    def shrink(self, o: "Outstanding", now: float) -> None:
        """Halve the window, unless it already shrank since ``o`` was sent."""
        if o.sent >= self.shrunk:
            self.window = max(1.0, self.window / 2)
            self.shrunk = now

    def timeout(self, initial: float, maximum: float) -> float:
        """The first retransmission timeout of a BIU to this peer (module docstring)."""
        if self.srtt is None:
            base = initial
        else:
            base = max(initial, self.srtt + 4 * self.rttvar)
        return min(base * self.backoff, maximum)

    def busy(self) -> bool:
        return bool(self.outstanding or self.pending or self.answering or self.requests)


class Sync:
    """The synchronisation state towards every live peer of one home agent."""

    #: Once this many BIUs are outstanding to a peer (a burst), further changes are queued
    #: and sent packed at the next timer, due at once (:meth:`publish`); 0 never queues them
    #: (one BIU per change while the window has room).
    coalesce_after: int = 4

    def __init__(self, settings: Any, rng: Any, counters: Any) -> None:
        self.settings = settings
        self.rng = rng
        self.counters = counters
        self.source = settings.signalling_address
        #: The longest answer time of a peer that does not shrink its window (module
        #: docstring): an eighth of the failure detection time (the HA lifetime, or
        #: ``hello_misses`` HELLO intervals when shorter), so a peer reads our HELLOs well
        #: within it.
        detection = float(settings.ha_lifetime)
        if settings.hello_misses:
            detection = min(detection, settings.hello_misses * settings.hello_interval)
        self.target = max(0.05, detection / 8)
        self.peers: Dict[Any, PeerSync] = {}
        self._heap: List[Timer] = []
        # First transmissions mostly wait the same timeout, so their deadlines mostly come in
        # order: a FIFO holds them for O(1); retransmissions, requests and a first deadline
        # earlier than the FIFO's last (the timeout shrank) go to the heap.
        self._fresh: Deque[Timer] = deque()
        self._budget = settings.sync_mtu - _OVERHEAD
        # Address take-over adds up to two ESP State options (48 octets each with padding) per
        # entry on the way out (haha.security.takeover): leave room for them.
        self._extra = 96 if settings.address_takeover else 0
        #: A haha.core.slices.Backlog to answer bulk requests in slices (None: at once), and
        #: the binding cache to check queued bindings against; the home agent sets both.
        self.work: Any = None
        self.cache: Any = None
        #: When the changes queued while peers had BIUs outstanding are sent (None: nothing
        #: queued that way). See :meth:`publish`.
        self._flush_at: Optional[float] = None

    # -- peers -----------------------------------------------------------------------------

    def add_peer(self, address: Any) -> PeerSync:
        if address not in self.peers:
            self.peers[address] = PeerSync(address)
        return self.peers[address]

    def drop_peer(self, address: Any) -> Optional[PeerSync]:
        """Forget everything owed to ``address`` (declared dead, docs/protocol.md 6.3)."""
        return self.peers.pop(address, None)

    def busy(self) -> bool:
        return any(p.busy() for p in self.peers.values())

    # -- outgoing updates ------------------------------------------------------------------

    def publish(self, binding: Any, now: float, out: Effects, deleted: bool = False,
                batch: bool = False) -> None:
        """Send the state of primary ``binding`` (or its deletion) to every live peer. When one
        identifier is free towards every peer, all peers get the same message object.

        ``batch``: only queue it; :meth:`flush` sends what a burst of changes queued (a slice of
        a take-over, a mass expiry) packed into full BIUs, instead of one BIU per binding for
        as long as the window has room."""
        if deleted:
            bce = _bce(binding.home_address, binding.care_of, binding.flags, binding.sequence,
                       0, binding.prefixes)
            expires = None
        else:
            expires = binding.expires
            bce = _bce(binding.home_address, binding.care_of, binding.flags, binding.sequence,
                       units_ceil(expires - now), binding.prefixes)
        key = address_int(binding.home_address)
        limit = self.coalesce_after
        if not batch and limit and any(len(p.outstanding) >= limit
                                       for p in self.peers.values()):
            # A burst: BIUs are already on their way. Queue this change and send everything
            # queued at the next timer, due now: a driver runs it after the packets it is
            # handling at this instant (the Twisted adapter after the slice of its socket
            # backlog), so a burst of registrations leaves packed into full BIUs instead of
            # one BIU (and one acknowledgement) per binding per peer.
            batch = True
            if self._flush_at is None:
                self._flush_at = now
        if batch:
            for peer in self.peers.values():
                self._queue(peer, key, bce, expires, now, out)
            return
        ident = self.rng.getrandbits(16) or 1
        shared = _biu(ident, (bce,), ())
        for peer in self.peers.values():
            self._offer(peer, key, bce, expires, now, out, shared)

    def offer(self, address: Any, binding: Any, now: float, out: Effects) -> None:
        """Send the state of primary ``binding`` to peer ``address`` only, unless it is already
        on its way there."""
        peer = self.peers.get(address)
        if peer is None:
            return
        key = address_int(binding.home_address)
        if key in peer.carrying or key in peer.pending:
            return
        bce = _bce(binding.home_address, binding.care_of, binding.flags, binding.sequence,
                   units_ceil(binding.expires - now), binding.prefixes)
        self._offer(peer, address_int(binding.home_address), bce, binding.expires, now, out)

    def push(self, address: Any, snapshot: List[Any], now: float, out: Effects) -> None:
        """Send peer ``address`` every primary binding of ``snapshot`` (a list of the cache's
        entries) that is not already on its way there: a peer we declared dead may never have
        doubted us, and then it will not ask for what we registered meanwhile.

        With a :attr:`work` backlog the entries are picked in slices ("push", as many per
        slice as a bulk answer's), each checked against :attr:`cache` when its turn comes, and
        each slice's BIUs leave packed at its end: queueing 50,000 in the call that saw the
        peer come back held the reactor for a third of a second. A bulk request from the peer
        (it restarted) ends the push: the answer sends every primary."""
        peer = self.peers.get(address)
        if peer is None or peer.answering:
            return  # a bulk answer under way sends all of it
        cache = self.cache

        def step(b: Any, now: float, out: Effects) -> None:
            if b.primary is not None or (cache is not None
                                         and cache.get(b.home_address) is not b):
                return
            hoa = address_int(b.home_address)
            if hoa in peer.carrying or hoa in peer.pending:
                return
            peer.serial += 1
            peer.pending[hoa] = (_bce(b.home_address, b.care_of, b.flags, b.sequence,
                                      units_ceil(b.expires - now), b.prefixes),
                                 b.expires, peer.serial, None)

        def after(now: float, out: Effects) -> None:
            if self.peers.get(address) is peer and peer.pending:
                self._flush(peer, now, out)
                if peer.answering:
                    self._check_barriers(peer, now, out)

        if self.work is None:
            for b in snapshot:
                step(b, now, out)
            after(now, out)
        else:
            self.work.sizes.setdefault("push", BULK_SLICE)
            # A bulk request from the peer stops the push: its answer sends all of it.
            self.work.add(snapshot, step, now, out,
                          alive=lambda: self.peers.get(address) is peer and not peer.answering,
                          after=after, name="push")

    @staticmethod
    def _withdraw(peer: PeerSync, hoa: int) -> bool:
        """Take ``hoa`` out of the outstanding BIU carrying it (a newer state replaces it).
        True when that BIU is left with nothing to wait for and is forgotten."""
        old = peer.carrying.pop(hoa, None)
        if old is not None:
            o = peer.outstanding.get(old)
            if o is not None:
                o.entries.pop(hoa, None)
                if not o.entries and not o.marker:
                    del peer.outstanding[old]
                    return True
        return False

    def _offer(self, peer: PeerSync, hoa: int, bce: BceInfo, expires: Optional[float],
               now: float, out: Effects, shared: Optional[BindingInfoUpdate] = None) -> None:
        self._withdraw(peer, hoa)
        peer.serial += 1
        if hoa in peer.pending:
            peer.pending[hoa] = (bce, expires, peer.pending[hoa][2], None)
        elif not peer.pending and len(peer.outstanding) < self.window(peer):
            if shared is not None and shared.identifier not in peer.outstanding:
                ident = shared.identifier
            else:
                ident = self._identifier(peer)
                shared = None
            self._transmit(peer, Outstanding(ident, {hoa: (bce, expires)}, peer.serial,
                                             self.settings.biu_initial_timeout, 0.0),
                           (bce,), now, out, shared)
        else:
            peer.pending[hoa] = (bce, expires, peer.serial, None)
            self._flush(peer, now, out)
        if peer.answering:
            self._check_barriers(peer, now, out)

    def _queue(self, peer: PeerSync, hoa: int, bce: BceInfo, expires: Optional[float],
               now: float, out: Effects) -> None:
        self._withdraw(peer, hoa)
        peer.serial += 1
        pending = peer.pending
        if hoa in pending:
            pending[hoa] = (bce, expires, pending[hoa][2], None)
        else:
            pending[hoa] = (bce, expires, peer.serial, None)
        if peer.answering:
            self._check_barriers(peer, now, out)

    def flush(self, now: float, out: Effects) -> None:
        """Send what :meth:`publish` queued with ``batch``, as the windows allow."""
        for peer in self.peers.values():
            if peer.pending:
                self._flush(peer, now, out)
                if peer.answering:
                    self._check_barriers(peer, now, out)

    def publish_deletion(self, home_address: Any, sequence: Optional[int], now: float,
                         out: Effects) -> None:
        """Tell every live peer that ``home_address`` was deleted at ``sequence`` (a peer sent
        us an older state of a binding we saw deregistered or expire: others may hold it too)."""
        bce = _bce(home_address, home_address, 0, sequence, 0, ())
        key = address_int(home_address)
        for peer in self.peers.values():
            self._offer(peer, key, bce, None, now, out)

    def withdraw(self, home_address: Any, now: float, out: Effects) -> None:
        """This home agent is no longer the primary of ``home_address`` (a newer registration
        elsewhere, a deletion from a peer): stop sending our stale state for it."""
        key = address_int(home_address)
        for peer in self.peers.values():
            if self._withdraw(peer, key) and peer.answering:
                self._check_barriers(peer, now, out)
            entry = peer.pending.get(key)
            if entry is not None and entry[3] is None:
                del peer.pending[key]

    def _identifier(self, peer: PeerSync, wanted: Optional[int] = None) -> int:
        used = peer.outstanding
        if wanted and wanted not in used:
            return wanted
        bits = self.rng.getrandbits
        while True:
            ident = bits(16)
            if ident and ident not in used:
                return ident

    def window(self, peer: PeerSync) -> int:
        """BIUs that may be outstanding to ``peer`` now (module docstring)."""
        if not peer.window:
            peer.window = float(self.settings.biu_window)
        return int(peer.window)

    def _transmit(self, peer: PeerSync, o: Outstanding, entries: Tuple[BceInfo, ...],
                  now: float, out: Effects, message: Optional[BindingInfoUpdate] = None) -> None:
        o.timeout = peer.timeout(self.settings.biu_initial_timeout, self.settings.biu_max_timeout)
        o.sent = now
        o.order = peer.sent_order
        peer.sent_order += 1
        o.next_at = now + o.timeout
        peer.outstanding[o.identifier] = o
        carrying = peer.carrying
        for hoa in o.entries:
            carrying[hoa] = o.identifier
        item = (o.next_at, 0, peer.address, o.identifier)
        fresh = self._fresh
        if not fresh or fresh[-1][0] <= o.next_at:
            fresh.append(item)
        else:
            heapq.heappush(self._heap, item)
        if message is None:
            message = _biu(o.identifier, entries, _owner_options(o.owner))
        out.append(make_send(message, self.source, peer.address, None, None, peer.address))
        self.counters["biu-sent"] += 1

    def _flush(self, peer: PeerSync, now: float, out: Effects) -> None:
        """Send pending changes while the window has room, packed up to the MTU; one BIU
        carries consecutive entries of one primary only, so each BIU costs the entries it
        takes, whatever the backlog (copying the backlog per BIU made a bulk answer O(N^2))."""
        pending = peer.pending
        window = self.window(peer)
        while pending and len(peer.outstanding) < window:
            entries: Dict[int, Tuple[BceInfo, Optional[float]]] = {}
            bces: List[BceInfo] = []
            room = self._budget
            serial: Optional[float] = None
            owner: Any = None
            for hoa, (bce, expires, s, who) in pending.items():
                if serial is None:
                    owner = who
                    serial = s
                elif who != owner:
                    break
                size = entry_size(bce) + self._extra
                if bces and size > room:
                    break
                room -= size
                entries[hoa] = (bce, expires)
                bces.append(bce)
            for hoa in entries:
                del pending[hoa]
            ident = self._identifier(peer)
            assert serial is not None
            self._transmit(peer, Outstanding(ident, entries, serial,
                                             self.settings.biu_initial_timeout, 0.0,
                                             owner=owner),
                           tuple(bces), now, out)

    # -- bulk and single answers -----------------------------------------------------------

    def answer_bulk(self, address: Any, identifier: int, bindings: Iterable[Any], now: float,
                    out: Effects, theirs: Iterable[Any] = ()) -> bool:
        """Answer a bulk BIR from ``address``: queue every primary binding (``bindings``), and
        the copies that name the requester as primary (``theirs``: it restarted and lost
        them; they go in BIUs naming it, see docs/core.md), then the end marker.

        With a :attr:`work` backlog the bindings are queued in slices (haha.core.slices): the
        request counts as being answered from the start (a retransmitted BIR starts nothing
        new), each binding is checked against :attr:`cache` when its turn comes (one deleted
        or changed meanwhile has already been sent as it now is), and the end marker waits
        for the last slice."""
        peer = self.peers.get(address)
        if peer is None or identifier in peer.answering:
            return False
        peer.answering[identifier] = _QUEUEING
        # lazily paired with their owner: no list of N tuples built in the request's call
        items = chain(zip(bindings, repeat(None)), zip(theirs, repeat(address)))
        if self.work is None:
            for item in items:
                self._queue_bulk(peer, item, now)
            self._close_bulk(peer, identifier, now, out)
        else:
            self.work.add(items, lambda item, t, o: self._queue_bulk(peer, item, t), now, out,
                          alive=lambda: self.peers.get(address) is peer,
                          done=lambda t, o: self._close_bulk(peer, identifier, t, o),
                          name="bulk-answer")
        return True

    def answer_bulk_scan(self, address: Any, identifier: int, snapshot: List[Any],
                         now: float, out: Effects) -> bool:
        """:meth:`answer_bulk` from ``snapshot`` (a list of the cache's entries, taken in the
        request's call at C speed): the primaries, then the copies naming the requester, are
        picked in the slices themselves, every entry one item of a pass, so no call does
        more than a slice's worth of work however large the cache (building the two lists
        up front took tens of milliseconds at 100,000 bindings)."""
        peer = self.peers.get(address)
        if peer is None or identifier in peer.answering:
            return False
        key = address_int(address)
        items = chain(zip(snapshot, repeat(0)), zip(snapshot, repeat(1)))

        def step(item: Tuple[Any, int], now: float, out: Effects) -> None:
            b, kind = item
            p = b.primary
            if kind == 0:
                if p is None:
                    self._queue_bulk(peer, (b, None), now)
            elif p is not None and address_int(p) == key:
                self._queue_bulk(peer, (b, address), now)

        peer.answering[identifier] = _QUEUEING
        if self.work is None:
            for item in items:
                step(item, now, out)
            self._close_bulk(peer, identifier, now, out)
        else:
            self.work.add(items, step, now, out,
                          alive=lambda: self.peers.get(address) is peer,
                          done=lambda t, o: self._close_bulk(peer, identifier, t, o),
                          name="bulk-answer")
        return True

    def _queue_bulk(self, peer: PeerSync, item: Tuple[Any, Any], now: float) -> None:
        b, owner = item
        cache = self.cache
        if cache is not None and (cache.get(b.home_address) is not b or b.primary != owner):
            return  # deleted, or changed hands, since the request: already sent as it is now
        hoa = address_int(b.home_address)
        self._withdraw(peer, hoa)
        peer.serial += 1
        bce = _bce(b.home_address, b.care_of, b.flags, b.sequence,
                   units_ceil(b.expires - now), b.prefixes)
        pending = peer.pending
        serial = pending[hoa][2] if hoa in pending else peer.serial
        pending[hoa] = (bce, b.expires, serial, owner)

    def _close_bulk(self, peer: PeerSync, identifier: int, now: float, out: Effects) -> None:
        peer.serial += 1
        peer.answering[identifier] = peer.serial
        self._flush(peer, now, out)
        self._check_barriers(peer, now, out)

    def give_back(self, address: Any, bindings: List[Any], now: float, out: Effects) -> None:
        """Send ``bindings`` to peer ``address`` in BIUs naming it as their primary (address
        take-over's hand-back: they were served from its address, which it now holds again)."""
        peer = self.peers.get(address)
        if peer is None or not bindings:
            return
        for b in bindings:
            hoa = address_int(b.home_address)
            self._withdraw(peer, hoa)
            peer.serial += 1
            bce = _bce(b.home_address, b.care_of, b.flags, b.sequence,
                       units_ceil(b.expires - now), b.prefixes)
            peer.pending[hoa] = (bce, b.expires, peer.serial, address)
        self._flush(peer, now, out)

    def answer_single(self, address: Any, identifier: int, binding: Any, now: float,
                      out: Effects) -> bool:
        """Answer a single BIR with one BIU carrying the request's identifier (draft 5.2)."""
        peer = self.peers.get(address)
        if peer is None:
            return False
        hoa = address_int(binding.home_address)
        self._withdraw(peer, hoa)
        peer.pending.pop(hoa, None)
        peer.serial += 1
        bce = _bce(binding.home_address, binding.care_of, binding.flags, binding.sequence,
                   units_ceil(binding.expires - now), binding.prefixes)
        ident = self._identifier(peer, identifier)
        self._transmit(peer, Outstanding(ident, {hoa: (bce, binding.expires)}, peer.serial,
                                         self.settings.biu_initial_timeout, 0.0),
                       (bce,), now, out)
        return True

    def _check_barriers(self, peer: PeerSync, now: float, out: Effects) -> None:
        for ident, barrier in list(peer.answering.items()):
            if ident in peer.outstanding:
                continue  # the end marker is on its way (or the identifier is busy)
            if peer.pending and next(iter(peer.pending.values()))[2] <= barrier:
                continue
            if any(o.serial <= barrier for o in peer.outstanding.values() if not o.marker):
                continue
            o = Outstanding(ident, {}, barrier, self.settings.biu_initial_timeout, 0.0, True)
            self._transmit(peer, o, (), now, out)

    # -- acknowledgements ------------------------------------------------------------------

    def acknowledge(self, address: Any, bia: Any, now: float,
                    out: Effects) -> Optional[Outstanding]:
        """Apply a BIA from ``address``; returns the acknowledged :class:`Outstanding` or None."""
        peer = self.peers.get(address)
        if peer is None:
            return None
        o = peer.outstanding.pop(bia.identifier, None)
        if o is None:
            return None
        if not o.resent:
            rtt = now - o.sent
            peer.measured(rtt)
            if rtt > self.target:
                peer.shrink(o, now)
            else:
                limit = self.settings.biu_window
                if peer.window < limit:
                    peer.window = min(limit, peer.window + 1 / peer.window)
        if o.order > peer.acked_order:
            peer.acked_order = o.order
            if peer.outstanding:
                self._lost(peer, now, out)
        carrying = peer.carrying
        ident = o.identifier
        for hoa in o.entries:
            if carrying.get(hoa) == ident:
                del carrying[hoa]
        if o.marker:
            if peer.answering.pop(ident, None) is not None:
                done = peer.answered
                horizon = now - self.settings.biu_max_timeout
                for old in [k for k, t in done.items() if t < horizon]:
                    del done[old]
                done[ident] = now
        if peer.pending:
            self._flush(peer, now, out)
        if peer.answering:
            self._check_barriers(peer, now, out)
        return o

    def _lost(self, peer: PeerSync, now: float, out: Effects) -> None:
        """Send again at once the BIUs that :data:`FAST_RETRANSMIT` later ones overtook. The
        outstanding BIUs are in the order they were first sent: only the front is looked at."""
        limit = peer.acked_order - FAST_RETRANSMIT
        for o in peer.outstanding.values():  # _resend does not change the dict
            if o.order > limit:
                break
            if o.fast:
                continue
            o.fast = True
            self.counters["biu-fast-retransmitted"] += 1
            self._resend(peer, o, now, out)

    def _resend(self, peer: PeerSync, o: Outstanding, now: float, out: Effects) -> None:
        """Send outstanding BIU ``o`` again, its lifetimes as they are now; its timer restarts
        with its current timeout."""
        o.resent = True
        o.next_at = now + o.timeout
        address = peer.address
        heapq.heappush(self._heap, (o.next_at, 0, address, o.identifier))
        entries = tuple(
            bce if expires is None else _bce(
                bce.home_address, bce.care_of_address, bce.flags, bce.sequence,
                units_ceil(expires - now), bce.prefixes)
            for bce, expires in o.entries.values())
        out.append(make_send(_biu(o.identifier, entries, _owner_options(o.owner)), self.source,
                             address, None, None, address))
        self.counters["biu-retransmitted"] += 1

    # -- requests (BIR) --------------------------------------------------------------------

    def request(self, address: Any, target: Any, now: float,
                out: Effects) -> Optional[Request]:
        """Send a BIR to ``address``: ``target`` None asks for every binding (bulk,
        docs/protocol.md 6.5), an IPv6Address for one home address, an IPv6Network for a prefix."""
        peer = self.peers.get(address)
        if peer is None:
            return None
        if target is None:
            for r in peer.requests.values():
                if r.target is None:
                    return r  # one bulk request at a time
        used = peer.requests
        while True:
            ident = self.rng.getrandbits(16)
            if ident and ident not in used:
                break
        r = Request(ident, target, now, self.settings.biu_initial_timeout, 0.0)
        used[ident] = r
        self._send_request(peer, r, now, out)
        return r

    def repeated_bulk(self, address: Any, identifier: int, now: float) -> bool:
        """Whether a bulk BIR from ``address`` with ``identifier`` repeats one being answered
        or answered in the last ``biu_max_timeout`` seconds (module docstring): nothing to do."""
        peer = self.peers.get(address)
        if peer is None:
            return False
        if identifier in peer.answering:
            return True
        t = peer.answered.get(identifier)
        return t is not None and now - t <= self.settings.biu_max_timeout

    def _send_request(self, peer: PeerSync, r: Request, now: float, out: Effects) -> None:
        if r.target is None:
            opts: Tuple[Any, ...] = (IpAddress(IPADDR_HOME_ADDRESS, UNSPECIFIED, 128),)
        elif isinstance(r.target, IPv6Address):
            opts = (IpAddress(IPADDR_HOME_ADDRESS, r.target, 128),)
        else:
            opts = (MobileNetworkPrefix(r.target),)
        r.next_at = now + r.timeout
        heapq.heappush(self._heap, (r.next_at, 1, peer.address, r.identifier))
        out.append(make_send(BindingInfoRequest(r.identifier, opts), self.source, peer.address,
                             None, None, peer.address))
        self.counters["bir-sent"] += 1

    def bulk_requested(self, address: Any) -> bool:
        """Whether a bulk request of ours to ``address`` awaits its end marker (what it sends
        meanwhile is, mostly, its answer)."""
        peer = self.peers.get(address)
        if peer is None or not peer.requests:
            return False
        return any(r.target is None for r in peer.requests.values())

    def answered(self, address: Any, biu: BindingInfoUpdate) -> Optional[Request]:
        """If BIU ``biu`` from ``address`` answers one of our BIRs, close the request and return
        it; a bulk request is closed only by its end marker (no entries)."""
        peer = self.peers.get(address)
        if peer is None:
            return None
        r = peer.requests.get(biu.identifier)
        if r is None:
            return None
        if r.target is None and biu.entries:
            return None
        del peer.requests[biu.identifier]
        return r

    # -- timers ----------------------------------------------------------------------------

    def _live(self, item: Timer) -> bool:
        t, kind, address, ident = item
        peer = self.peers.get(address)
        if peer is None:
            return False
        entry: Any = (peer.outstanding if kind == 0 else peer.requests).get(ident)
        return entry is not None and entry.next_at == t

    def next_deadline(self) -> Optional[float]:
        """When the next BIU or BIR retransmission (or the flush of changes queued during a
        burst) is due, or None."""
        flush_at = self._flush_at
        if flush_at is not None:
            other = self._next_retransmission()
            return flush_at if other is None else min(flush_at, other)
        return self._next_retransmission()

    def _next_retransmission(self) -> Optional[float]:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        fresh = self._fresh
        while fresh and not self._live(fresh[0]):
            fresh.popleft()
        if heap and fresh:
            return min(heap[0][0], fresh[0][0])
        if heap:
            return heap[0][0]
        return fresh[0][0] if fresh else None

    def _due(self, now: float) -> Optional[Timer]:
        """Pop the earliest timer item due at ``now`` from either queue, or None."""
        heap, fresh = self._heap, self._fresh
        h = heap[0][0] if heap and heap[0][0] <= now else None
        f = fresh[0][0] if fresh and fresh[0][0] <= now else None
        if h is None and f is None:
            return None
        if f is None or (h is not None and h <= f):
            return heapq.heappop(heap)
        return fresh.popleft()

    def tick(self, now: float, out: Effects) -> None:
        """Send what a burst queued (:meth:`publish`), retransmit every BIU and BIR whose
        timeout has passed."""
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_at = None
            self.flush(now, out)
        maximum = self.settings.biu_max_timeout
        while True:
            item = self._due(now)
            if item is None:
                break
            t, kind, address, ident = item
            peer = self.peers.get(address)
            if peer is None:
                continue
            if kind == 0:
                o = peer.outstanding.get(ident)
                if o is None or o.next_at != t:
                    continue
                peer.timed_out(o, now)
                o.timeout = min(o.timeout * 2, maximum)
                self._resend(peer, o, now, out)
            else:
                r = peer.requests.get(ident)
                if r is None or r.next_at != t:
                    continue
                if r.target is not None and r.tries >= SINGLE_RETRIES:
                    del peer.requests[ident]
                    continue
                r.tries += 1
                r.timeout = min(r.timeout * 2, maximum)
                self._send_request(peer, r, now, out)
                self.counters["bir-retransmitted"] += 1
