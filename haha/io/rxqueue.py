"""The input queue both transports put what they read into: peers first, superseded packets.

A home agent's peers and its mobile nodes reach it through one socket (or one packet socket per
interface), and the kernel queues their packets in arrival order. Two things go wrong under a
burst of registrations when they are processed in that order (docs/io.md, "Input queues"):

- **A peer waits behind every node.** A peer's HELLO queued behind thousands of Binding Updates
  is processed seconds later, and once that exceeds the peers' lifetime live peers are declared
  dead. So a transport reads much more than it processes at each readiness and sorts what it
  read into two queues: packets it can attribute to a configured peer (each transport says how:
  :meth:`InputQueue.put_peer`) and the rest (:meth:`InputQueue.put`). :meth:`InputQueue.run`
  processes the peer packets first, then the rest, each in slices of at most ``slice_seconds``,
  returning to the reactor between slices (due timers run, the socket is read again, peers
  first). Peer packets are sliced too: a restarted home agent relearning 100,000 bindings
  has thousands of BIUs queued from its peers, and processing all of them at once held its
  reactor 50-65 ms at a time (its stall probe counted it); the rest waits until no peer packet
  does.
- **Retransmissions cost as much as the first copy.** A node whose Binding Update waits longer
  than its retransmission timer sends it again; both copies wait, and each costs a decryption,
  a decoding and an answer. With ``supersede`` a packet protected by ESP that arrives while an
  older one *of the same sender, SA and length* still waits (same fixed-header source, same
  SPI, same length, and for the UDP transport the same UDP endpoint) takes the older one's
  place in the queue, the older one dropped and counted (``superseded``). Of two such packets
  the one with the higher ESP sequence number is kept (the later one the sender sent); an
  arrival with a lower or equal number is dropped instead. What this can lose and why it does
  not matter is in docs/io.md. Packets from configured peer addresses (whose SA carries many
  different messages that must all arrive) and packets without ESP are never superseded.

- **Urgent work of the receiver comes first.** ``urgent`` (a callable, set by whoever owns the
  receiver: the home agent's service, true while a take-over is in slices or its first switch
  requests are behind their pace) makes a slice of other traffic last at most
  ``urgent_slice_seconds`` instead of ``slice_seconds`` (counted, ``slices_yielded``), so the
  work the receiver's own timer does between two slices gets most of the process while it
  lasts; with ``hold_while_urgent`` (the home agent's queue) other traffic gets no slice at
  all meanwhile (counted, ``slices_held``: the queue looks again after the reactor's turn),
  and a slice it is in ends with the packet that made the receiver urgent. Peers' packets
  still all go first. The receiver must keep its urgent work finite: the home agent's is its
  first switch requests (each sent once, at about 65 us) and its take-over's slices.

- **Retransmissions of an answer already accepted cost nothing more.** A node told to switch
  answers with a Binding Update; when that waits in the queue longer than the node's
  retransmission timer, the node sends it again, and a copy arriving after the first was
  processed is decrypted, found a duplicate and answered again (a quarter to a third of
  the answers in a 30,000-node take-over on a loaded machine). When the receiver accepts the
  packet being delivered as such an answer (:meth:`InputQueue.answered`, called from within
  ``deliver``: the home agent, once the packet authenticated and its registration was
  accepted), later packets with the same supersession key (source, SPI, length, endpoint)
  are dropped unread for ``answered_window`` seconds (counted, ``answered_dropped``). Only
  an authenticated, accepted packet opens the window, so a forged one cannot; what it could
  cost a node is a delay of at most the window for a different message of the same length
  under the same SA sent within it (its own retransmission gets through after), docs/io.md.

Both queues are bounded: at most ``max_backlog`` packets wait in each (more are counted,
``dropped_backlog``, and dropped, as the kernel would have dropped them), and at most
``max_per_source`` of the other traffic from one fixed-header source
(``dropped_source_backlog``), so one sender cannot fill the queue for everybody.

The look-up tables of waiting packets (by supersession key, by source) are made anew when the
queue empties after it was deeper than ``SHRINK_AFTER`` packets: a dictionary keeps the size of
its fullest moment, and after a burst of 100,000 registrations the two held about 100 octets
per node, for nothing, until the daemon stopped. Then ``on_drained`` is called (the home agent
asks the C allocator to give freed memory back, :mod:`haha.alloctrim`).

Sans reactor: the queue is given ``call_later(0, f)`` to come back after the reactor's turn
(``None``: everything is processed at once) and ``timer`` to measure slices (a test passes a
fake one).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from typing import Any

#: Next-header values of the extension headers walked to find ESP: Hop-by-Hop Options,
#: Routing, Destination Options (the Home Address option travels in the last one, before ESP).
_EXTENSIONS = frozenset((0, 43, 60))
#: ESP's protocol number.
ESP = 50
#: At most this many extension headers are walked (a packet with more is not superseded).
MAX_EXTENSIONS = 4

#: Defaults sized for 100,000 mobile nodes registering in one burst (docs/io.md).
DEFAULT_MAX_BACKLOG = 131072
DEFAULT_MAX_PER_SOURCE = 1024
DEFAULT_SLICE_SECONDS = 0.02
#: A slice of other traffic while the receiver has urgent work (``InputQueue.urgent``): short,
#: not nothing, so node traffic still moves (a node retransmitting into a full queue loses
#: nothing more for it, but a control answer or a peer-less HA set keeps going).
DEFAULT_URGENT_SLICE_SECONDS = 0.002
#: A backlog of other traffic deeper than this has its look-up tables made anew once it
#: empties (module docstring).
SHRINK_AFTER = 4096
#: Seconds after an accepted answer (:meth:`InputQueue.answered`) during which packets with its
#: supersession key are dropped unread: about the time the answer's acknowledgement takes to
#: reach a busy node, and no longer than a node's retransmission timer doubled twice (1.5 s
#: first), so a different message caught in it waits at most that long.
DEFAULT_ANSWERED_WINDOW = 3.0


def esp_offset(data: bytes) -> int:
    """Where the ESP header of IPv6 packet ``data`` starts (after at most
    :data:`MAX_EXTENSIONS` Hop-by-Hop, Routing and Destination Options headers), or -1 when the
    packet has no ESP header there or is too short to hold its SPI and sequence number."""
    nh = data[6]
    off = 40
    n = len(data)
    walked = 0
    while nh in _EXTENSIONS:
        if walked == MAX_EXTENSIONS or off + 8 > n:
            return -1
        nh = data[off]
        off += (data[off + 1] + 1) * 8
        walked += 1
    if nh != ESP or off + 8 > n:
        return -1
    return off


# A queued packet: [data, meta, ESP sequence number, supersession key or None, source].
_DATA, _META, _SEQ, _KEY, _SOURCE = range(5)


class InputQueue:
    """Packets read but not yet processed (module docstring).

    ``deliver(data, meta)`` processes one packet (``meta`` is whatever the transport put with
    it: the UDP endpoint, the interface). ``call_later(0, f)`` schedules the next slice.
    ``exempt``: fixed-header sources (16 octets each) never superseded, the configured peers'
    addresses; the transport may replace it. ``counters`` is shared with the transport.
    """

    def __init__(self, deliver: Callable[[bytes, Any], object],
                 call_later: Callable[[float, Callable[[], None]], Any] | None, *,
                 max_backlog: int = DEFAULT_MAX_BACKLOG,
                 max_per_source: int = DEFAULT_MAX_PER_SOURCE,
                 slice_seconds: float = DEFAULT_SLICE_SECONDS, supersede: bool = True,
                 timer: Callable[[], float] = time.perf_counter,
                 counters: Counter[str] | None = None,
                 urgent_slice_seconds: float = DEFAULT_URGENT_SLICE_SECONDS,
                 answered_window: float = DEFAULT_ANSWERED_WINDOW) -> None:
        if not isinstance(max_backlog, int) or max_backlog < 1:
            raise ValueError(f"max_backlog {max_backlog!r} must be at least 1")
        if not isinstance(max_per_source, int) or max_per_source < 1:
            raise ValueError(f"max_per_source {max_per_source!r} must be at least 1")
        if not slice_seconds > 0:
            raise ValueError(f"slice_seconds {slice_seconds!r} must be positive")
        if not urgent_slice_seconds > 0:
            raise ValueError(f"urgent_slice_seconds {urgent_slice_seconds!r} must be positive")
        if not answered_window >= 0:
            raise ValueError(f"answered_window {answered_window!r} must not be negative")
        self._deliver = deliver
        self._call_later = call_later
        self.max_backlog = max_backlog
        self.max_per_source = max_per_source
        self.slice_seconds = slice_seconds
        self.urgent_slice_seconds = min(urgent_slice_seconds, slice_seconds)
        #: True while the receiver has work of its own that should come before other traffic
        #: (module docstring); None: never.
        self.urgent: Callable[[], bool] | None = None
        #: While :attr:`urgent` says so, other traffic waits entirely (no slice at all, the
        #: queue looks again after the reactor's turn) instead of getting
        #: ``urgent_slice_seconds``: for a receiver whose urgent work is finite and cheap per
        #: item (the home agent's first switch requests, haha.service).
        self.hold_while_urgent = False
        self.supersede = bool(supersede)
        self._timer = timer
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.answered_window = answered_window
        for name in ("superseded", "dropped_backlog", "dropped_source_backlog", "slices_yielded",
                     "peer_slices_deferred", "answered_dropped", "slices_held"):
            self.counters[name] += 0  # shown (as 0) before the first one
        self.exempt: frozenset[bytes] = frozenset()
        #: The peers' packets, ``(data, meta)``, processed first.
        self.peers: deque[tuple[bytes, Any]] = deque()
        #: Everything else, in arrival order (a superseding packet takes its predecessor's
        #: place).
        self.queue: deque[list[Any]] = deque()
        self._latest: dict[Hashable, list[Any]] = {}
        self._per_source: dict[bytes, int] = {}
        #: The backlog was deeper than SHRINK_AFTER since the tables were made.
        self._deep = False
        #: Called once such a deep backlog has drained (the tables made anew): the home agent
        #: gives the freed memory back then (haha.alloctrim).
        self.on_drained: Callable[[], object] | None = None
        self._slice_call: Any = None
        #: The packet of other traffic being delivered now (for :meth:`answered`).
        self._current: list[Any] | None = None
        #: Supersession keys of accepted answers -> until when their copies are dropped, and
        #: the same in the order they were added (to forget them when they expire).
        self._answered: dict[Hashable, float] = {}
        self._answered_order: deque[tuple[float, Hashable]] = deque()

    def __len__(self) -> int:
        return len(self.peers) + len(self.queue)

    def put_peer(self, data: bytes, meta: Any) -> None:
        """Queue a packet the transport attributed to a configured peer."""
        if len(self.peers) >= self.max_backlog:
            self.counters["dropped_backlog"] += 1
            return
        self.peers.append((data, meta))
        self.counters["received_from_peers"] += 1

    def put(self, data: bytes, meta: Any, endpoint: Hashable = None) -> None:
        """Queue any other packet (at least 40 octets: the transport checked). ``endpoint``
        takes part in the supersession key (the UDP transport's source endpoint)."""
        source = data[8:24]
        key = None
        seq = 0
        if self.supersede and source not in self.exempt:
            off = esp_offset(data)
            if off >= 0:
                key = (source, data[off:off + 4], len(data), endpoint)
                if self._answered and key in self._answered:
                    if self._timer() < self._answered[key]:
                        self.counters["answered_dropped"] += 1
                        return
                    del self._answered[key]
                seq = int.from_bytes(data[off + 4:off + 8], "big")
                slot = self._latest.get(key)
                if slot is not None:
                    self.counters["superseded"] += 1
                    if seq > slot[_SEQ]:  # the newer keeps the older one's place
                        slot[_DATA] = data
                        slot[_META] = meta
                        slot[_SEQ] = seq
                    return
        queue = self.queue
        if len(queue) >= self.max_backlog:
            self.counters["dropped_backlog"] += 1
            return
        per_source = self._per_source
        held = per_source.get(source, 0)
        if held >= self.max_per_source:
            self.counters["dropped_source_backlog"] += 1
            return
        per_source[source] = held + 1
        slot = [data, meta, seq, key, source]
        if key is not None:
            self._latest[key] = slot
        queue.append(slot)

    def answered(self, source: bytes) -> bool:
        """The packet being delivered now, from fixed-header source ``source`` (16 octets),
        was authenticated and accepted as an answer (the home agent: a Binding Update
        answering its switch request): for ``answered_window`` seconds, packets with its
        supersession key are dropped unread (module docstring). Called from within
        ``deliver``; True when a window was opened (the packet had a key, and that
        source)."""
        slot = self._current
        if slot is None or slot[_KEY] is None or slot[_SOURCE] != source \
                or not self.answered_window:
            return False
        now = self._timer()
        until = now + self.answered_window
        order = self._answered_order
        while order and order[0][0] <= now:
            t, key = order.popleft()
            if self._answered.get(key) == t:
                del self._answered[key]
        self._answered[slot[_KEY]] = until
        order.append((until, slot[_KEY]))
        return True

    def holds(self, source: bytes) -> bool:
        """Whether a packet from fixed-header source ``source`` (16 octets) waits among the
        other traffic: an answer already here, only not processed yet."""
        return source in self._per_source

    def _pop(self) -> list[Any]:
        slot = self.queue.popleft()
        key = slot[_KEY]
        if key is not None:
            del self._latest[key]
        source = slot[_SOURCE]
        held = self._per_source[source] - 1
        if held:
            self._per_source[source] = held
        else:
            del self._per_source[source]
        return slot

    def run(self) -> None:
        """After a read: the peer packets now (a slice of them); the rest in a slice now
        unless one is already scheduled (it will come after the reactor's turn)."""
        if not self._peers_first():
            return
        if self.queue and (self._slice_call is None or not self._slice_call.active()):
            self._process()

    def _peers_first(self) -> bool:
        """Peer packets for at most ``slice_seconds``; True when none is left, else the next
        slice is scheduled (peers again first) and other traffic waits for it."""
        peers, deliver = self.peers, self._deliver
        if not peers:
            return True
        if self._call_later is None:
            while peers:
                deliver(*peers.popleft())
            return True
        timer = self._timer
        end = timer() + self.slice_seconds
        while peers:
            deliver(*peers.popleft())
            if peers and timer() >= end:
                self.counters["peer_slices_deferred"] += 1
                if self._slice_call is None or not self._slice_call.active():
                    self._slice_call = self._call_later(0, self._process)
                return False
        return True

    def _process(self) -> None:
        """Peer packets (a slice of them), then other traffic for at most ``slice_seconds``
        (or ``urgent_slice_seconds`` while :attr:`urgent` says so); what is left waits for
        the next turn of the reactor (after timers and a new read)."""
        self._slice_call = None
        peers, queue, deliver = self.peers, self.queue, self._deliver
        if not self._peers_first() or not queue:
            return
        if len(queue) > SHRINK_AFTER:
            self._deep = True
        timer = self._timer
        urgent = self.urgent
        yielded = urgent is not None and self._call_later is not None and urgent()
        hold = self.hold_while_urgent
        call_later = self._call_later
        if yielded and hold and call_later is not None:
            # The receiver's urgent work first, all of it: look again after its turn.
            self.counters["slices_held"] += 1
            self._slice_call = call_later(0, self._process)
            return
        start = timer()
        end = start + (self.urgent_slice_seconds if yielded else self.slice_seconds)
        pop = self._pop
        while queue:
            slot = pop()
            self._current = slot
            try:
                deliver(slot[_DATA], slot[_META])
            finally:
                self._current = None
            if peers and not self._peers_first():
                # a receiver that re-entered the reactor read more: peers first, in a slice
                return
            if self._call_later is None:
                continue
            now = timer()
            if now >= end:
                break
            if not yielded and urgent is not None and urgent():
                # Urgent work arrived with this packet (a peer-down, a BIU): cut the slice
                # (at once when other traffic is held while it lasts).
                yielded = True
                end = now if hold else min(end, start + self.urgent_slice_seconds)
                if now >= end:
                    break
        if yielded:
            self.counters["slices_yielded"] += 1
        if not queue and self._deep:
            self._deep = False
            self._latest, self._per_source = {}, {}
            if self.on_drained is not None:
                self.on_drained()
        if queue and self._call_later is not None:
            self.counters["slices_deferred"] += 1
            self._slice_call = self._call_later(0, self._process)

    def clear(self) -> None:
        """Forget every queued packet and the scheduled slice (the transport stops)."""
        self.peers.clear()
        self.queue.clear()
        self._latest.clear()
        self._per_source.clear()
        self._answered.clear()
        self._answered_order.clear()
        if self._slice_call is not None and self._slice_call.active():
            self._slice_call.cancel()
        self._slice_call = None
