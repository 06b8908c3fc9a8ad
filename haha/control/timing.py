"""Latencies for the metrics histograms, measured from the messages and events of one daemon.

Sans-IO: :class:`LatencyTracker` is told about every signalling message the adapter receives
(after ESP, decoding and the security policy) or sends, and about every event of the machine,
each with the time ``now``; it calls its ``observe_*`` callbacks with durations in seconds.

- **Registration** (home agent): a Binding Update received from a home address, to the Binding
  Acknowledgement sent back to it. (Mobile node): the first Binding Update of a registration
  (initial, refresh, move or switch; retransmissions and other candidate home agents included)
  to the ``registered`` event, i.e. the acknowledgement that accepted it.
- **Synchronisation** (home agent): a Binding Information Update sent to a peer, to the
  Binding Information Acknowledgement with its identifier from that peer (retransmissions
  included: the clock starts at the first transmission).
- **Take-over** (home agent): from taking over a failed peer's mobile nodes (the ``take-over``
  event) until each of them has been accepted again here by a Binding Update (or its binding
  ended otherwise: deleted, expired, or passed to another home agent).

Everything pending is bounded (``limit`` entries per kind, oldest forgotten first) so that
requests never answered cannot grow memory.
"""

from collections.abc import Callable, Hashable
from ipaddress import IPv6Address
from typing import Any

from ..core.effects import Event
from ..core.events import EventName
from ..core.mobilenode import State as MNState
from ..wire.mh import BindingAck, BindingInfoAck, BindingInfoUpdate, BindingUpdate

#: Events after which a taken-over node no longer waits for its registration here.
_ENDED = frozenset({EventName.BINDING_DELETED, EventName.BINDING_EXPIRED,
                    EventName.PRIMARY_LOST})
#: Mobile node events that abandon a pending registration without measuring it (a stop is
#: the ``state`` event into ``idle``: the node emits no ``stopped``).
_ABANDONED = frozenset({EventName.DEREGISTERED})

#: A callback taking one duration in seconds.
Observe = Callable[[float], object]


def _nothing(seconds: float) -> None:
    return None


class LatencyTracker:
    """Pairs requests with their answers (module docstring). ``role`` is ``home-agent`` or
    ``mobile-node``; the callbacks take one duration in seconds (never negative)."""

    def __init__(self, role: str, observe_registration: Observe = _nothing,
                 observe_sync: Observe = _nothing, observe_takeover: Observe = _nothing,
                 limit: int = 4096) -> None:
        if role not in ("home-agent", "mobile-node"):
            raise ValueError(f"role {role!r}: expected home-agent or mobile-node")
        self.role = role
        self.observe_registration = observe_registration
        self.observe_sync = observe_sync
        self.observe_takeover = observe_takeover
        self.limit = limit
        # Keyed by the address's integer: hashing an IPv6Address is a Python-level call.
        self._bu: dict[int, float] = {}  # home address -> time the Binding Update arrived
        #: (peer, identifier) -> time of the first transmission
        self._biu: dict[tuple[int, int], float] = {}
        #: Mobile node: time of the registration's first BU.
        self._registering: float | None = None
        #: Home addresses of consecutive switch-requested events.
        self._switching: list[IPv6Address] = []
        #: [start, set of home addresses still to register]
        self._takeovers: list[tuple[float, set[IPv6Address]]] = []

    def pending(self) -> dict[str, int]:
        """How many requests wait for an answer (for tests and debugging)."""
        return {"registrations": len(self._bu) + (self._registering is not None),
                "syncs": len(self._biu),
                "takeovers": sum(len(waiting) for _, waiting in self._takeovers)}

    def _remember(self, table: dict[Any, float], key: Hashable, now: float,
                  first: bool = False) -> None:
        if first and key in table:
            return
        table.pop(key, None)
        table[key] = now
        if len(table) > self.limit:
            del table[next(iter(table))]

    # -- messages -------------------------------------------------------------------------

    def message(self, direction: str, message: Any, peer: IPv6Address, now: float) -> None:
        """A message received (``direction`` 'in', ``peer`` its sender's home address or
        source) or sent ('out', ``peer`` its home address or destination) at ``now``."""
        kind = type(message)
        if self.role == "mobile-node":
            if direction == "out" and kind is BindingUpdate:
                if message.lifetime == 0:
                    self._registering = None  # a deregistration is not a registration
                elif self._registering is None:
                    self._registering = now
            return
        if direction == "in":
            if kind is BindingUpdate:
                self._remember(self._bu, int(peer), now)
            elif kind is BindingInfoAck:
                start = self._biu.pop((int(peer), message.identifier), None)
                if start is not None:
                    self.observe_sync(max(0.0, now - start))
            return
        if kind is BindingAck:
            start = self._bu.pop(int(peer), None)
            if start is not None:
                self.observe_registration(max(0.0, now - start))
            if message.status < 128 and message.lifetime:
                self._registered_here(peer, now)
        elif kind is BindingInfoUpdate:
            self._remember(self._biu, (int(peer), message.identifier), now, first=True)

    # -- events ---------------------------------------------------------------------------

    def event(self, event: Event, now: float) -> None:
        """An event of the machine at ``now``."""
        name = event.name
        if self.role == "mobile-node":
            if name == EventName.REGISTERED and self._registering is not None:
                self.observe_registration(max(0.0, now - self._registering))
                self._registering = None
            elif name in _ABANDONED or (name == EventName.STATE
                                        and event.get("new") == MNState.IDLE):
                self._registering = None
            return
        if name == EventName.SWITCH_REQUESTED:
            # A take-over requests a switch for each node it claimed, then says "take-over"
            # with their count: the run of switch requests just before it names them.
            self._switching.append(event["home_address"])
            return
        switching, self._switching = self._switching, []
        if name == EventName.TAKE_OVER:
            count = event.fields.get("count", len(switching))
            waiting = set(switching[-count:]) if count else set()
            if waiting:
                self._takeovers.append((now, waiting))
                if len(self._takeovers) > self.limit:
                    del self._takeovers[0]
        elif name == EventName.PEER_DOWN:
            peer = int(event["peer"])
            for key in [k for k in self._biu if k[0] == peer]:
                del self._biu[key]  # never acknowledged now: not a latency
        elif name in _ENDED and "home_address" in event.fields:
            self._registered_here(event["home_address"], now)

    def _registered_here(self, home_address: IPv6Address, now: float) -> None:
        if not self._takeovers:
            return
        for entry in list(self._takeovers):
            start, waiting = entry
            if home_address in waiting:
                waiting.discard(home_address)
                if not waiting:
                    self._takeovers.remove(entry)
                    self.observe_takeover(max(0.0, now - start))
