"""An in-memory network of :class:`~haha.interfaces.IMobilityTransport` endpoints.

For tests and embedders: several endpoints on one :class:`MemoryHub`, each owning a set of
addresses; a sent packet is delivered, by its fixed-header destination, through the injected
clock's ``callLater`` (``latency`` seconds later, 0 by default), so a test drives it with
``task.Clock.advance`` and everything is deterministic. A multicast destination reaches every
other started endpoint. Faults are explicit: ``hub.drop_if`` (a predicate on the packet bytes)
and :meth:`MemoryHub.partition`. ``hub.log`` records every packet sent, as
``(sender, packet, delivered_to)``.

Addresses are ``IPv6Address`` objects or their text (``hub.endpoint("2001:db8:1::1")``); text
that is not an IPv6 address is refused with a ``ValueError`` naming it.
"""

from collections import Counter
from collections.abc import Callable
from ipaddress import IPv6Address

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ..interfaces import IMobilityTransport


def as_address(address: IPv6Address | str) -> IPv6Address:
    """``address`` as an ``IPv6Address``: one already, or its text; anything else is refused
    with an error naming it."""
    if isinstance(address, IPv6Address):
        return address
    if isinstance(address, str):
        try:
            return IPv6Address(address.strip())
        except ValueError:
            raise ValueError(f"{address!r} is not an IPv6 address") from None
    raise TypeError(f"{address!r} is not an IPv6 address (IPv6Address or text)")


class MemoryHub:
    """The shared medium. ``clock`` provides ``callLater``."""

    def __init__(self, clock: IReactorTime, latency: float = 0.0) -> None:
        self.clock = clock
        self.latency = latency
        self.endpoints: list[MemoryTransport] = []
        #: ``drop_if(packet)``: True drops the packet (loss, filtering in tests).
        self.drop_if: Callable[[bytes], bool] | None = None
        self._partitions: set[frozenset[MemoryTransport]] = set()
        self.counters: Counter[str] = Counter()
        #: (sender's name, packet, names of the endpoints it was delivered to), in order.
        self.log: list[tuple[str, bytes, tuple[str, ...]]] = []

    def endpoint(self, *addresses: IPv6Address | str, name: str | None = None
                 ) -> "MemoryTransport":
        """A new :class:`MemoryTransport` owning ``addresses`` (``IPv6Address`` or text)."""
        ep = MemoryTransport(self, addresses, name or f"ep{len(self.endpoints) + 1}")
        self.endpoints.append(ep)
        return ep

    def partition(self, a: "MemoryTransport", b: "MemoryTransport") -> None:
        """Cut both directions between endpoints ``a`` and ``b``."""
        self._partitions.add(frozenset((a, b)))

    def heal(self, a: "MemoryTransport | None" = None, b: "MemoryTransport | None" = None
             ) -> None:
        """Undo :meth:`partition` for ``a``/``b`` (all partitions when called bare)."""
        if a is None:
            self._partitions.clear()
        else:
            self._partitions.discard(frozenset((a, b)))

    def _route(self, sender: "MemoryTransport", packet: bytes) -> bool:
        dst = IPv6Address(bytes(packet[24:40]))
        if dst.is_multicast:
            targets = [e for e in self.endpoints if e is not sender and e.running]
        else:
            targets = [e for e in self.endpoints if dst in e.addresses]
        delivered = []
        for t in targets:
            if frozenset((sender, t)) in self._partitions:
                self.counters["partitioned"] += 1
                continue
            if self.drop_if is not None and self.drop_if(packet):
                self.counters["dropped"] += 1
                continue
            delivered.append(t.name)
            self.clock.callLater(self.latency, t._deliver, bytes(packet))
        if not targets:
            self.counters["no_route"] += 1
        self.log.append((sender.name, bytes(packet), tuple(delivered)))
        return bool(delivered)


@implementer(IMobilityTransport)
class MemoryTransport:
    """One endpoint of a :class:`MemoryHub`; addresses may change (a mobile node moving)."""

    def __init__(self, hub: MemoryHub, addresses: tuple[IPv6Address | str, ...], name: str
                 ) -> None:
        self.hub = hub
        self.name = name
        self.addresses: set[IPv6Address] = set()
        for a in addresses:
            self.add_address(a)
        self.counters: Counter[str] = Counter()
        self._receiver: Callable[[bytes], object] | None = None

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.name} {sorted(map(str, self.addresses))}>"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called (and :meth:`stop` not since)."""
        return self._receiver is not None

    def add_address(self, address: IPv6Address | str) -> None:
        """Own ``address`` too (an ``IPv6Address`` or its text)."""
        self.addresses.add(as_address(address))

    def remove_address(self, address: IPv6Address | str) -> None:
        """Stop owning ``address``."""
        self.addresses.discard(as_address(address))

    def start(self, receiver: Callable[[bytes], object]) -> None:
        """Deliver every packet for this endpoint's addresses to ``receiver``."""
        if self._receiver is not None:
            raise RuntimeError(f"{self.name} already started")
        self._receiver = receiver

    def stop(self) -> None:
        """Receive nothing more; sending is refused (counted)."""
        self._receiver = None

    def send(self, packet: bytes, interface: str | None = None) -> None:
        """Hand a complete IPv6 packet to the hub (``interface`` is ignored)."""
        if self._receiver is None:  # like the real transports: nothing leaves a stopped one
            self.counters["send_not_started"] += 1
            return
        if len(packet) < 40 or packet[0] >> 4 != 6:
            self.counters["send_invalid"] += 1
            return
        self.counters["sent"] += 1
        if not self.hub._route(self, packet):
            self.counters["undelivered"] += 1

    def _deliver(self, packet: bytes) -> None:
        if self._receiver is None:
            self.counters["dropped_stopped"] += 1
            return
        self.counters["received"] += 1
        self._receiver(packet)
