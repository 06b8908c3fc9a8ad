"""What goes into the machines and what comes out of them.

Inbound, the adapter hands each decoded message to a machine as an :class:`Inbound` record with
the addresses the IPv6 header chain carried. Outbound, machines return lists of small frozen
records, the *effects*, which the adapter carries out in order:

- :class:`Send`: a Mobility Header message to encode, protect and send;
- :class:`SendIcmp`: an ICMPv6 message (DHAAD request/reply);
- :class:`InstallRoute`, :class:`RemoveRoute`, :class:`ProxyNd`, :class:`AdvertisePrefix`: the
  home agent's forwarding duties, mapped one to one onto :class:`haha.interfaces.IForwardingBackend`;
- :class:`HoldAddress`: take over (or let go of) a home agent address (address take-over);
- :class:`TunnelUp`, :class:`TunnelDown`: the mobile node's side of its tunnel;
- :class:`AnnounceHome`: a mobile node back on its home link announces its home address;
- :class:`DrainComplete`: a draining home agent holds no primary binding any more (whoever
  waits for the drain, a stopping service, may go on);
- :class:`Event`: something worth logging or counting (a binding created, a peer lost...).

Every action the glue takes is one of these records, returned by the core: the glue never
watches events to decide what to do (events are for logs, counters and metrics).

The records are slotted frozen dataclasses, built by their ordinary constructors (the
``make_*`` names below, kept for older callers, are those constructors).
"""

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Dict, Optional, Tuple

from haha.wire.records import maker


@dataclass(frozen=True, slots=True)
class Inbound:
    """One decoded message and how it arrived.

    ``src``/``dst`` are the IPv6 header's addresses; ``home_address`` the Home Address option's
    (a Binding Update from a mobile node away from home comes from its care-of address with its
    home address here); ``routing_address`` the type 2 routing header's; ``protected_by`` the
    peer identity of the ESP SA that authenticated the message (a home agent's signalling
    address or a mobile node's home address), None when it arrived unprotected.
    """

    message: Any  # a decoded Mobility Header or ICMPv6 message (haha.wire)
    src: IPv6Address
    dst: IPv6Address
    home_address: Optional[IPv6Address] = None
    routing_address: Optional[IPv6Address] = None
    protected_by: Optional[IPv6Address] = None


@dataclass(frozen=True, slots=True)
class Send:
    """Send Mobility Header ``message`` from ``src`` to ``dst``.

    ``home_address`` asks for a Home Address option (``src`` is then a care-of address),
    ``routing_address`` for a type 2 routing header (``dst`` is then a care-of address and the
    routing address the final destination: the checksum pseudo-header uses it). ``protect``
    names the peer whose ESP SA must protect it (a home agent's signalling address, or a mobile
    node's home address), None to send in clear.
    """

    message: Any  # a Mobility Header message (haha.wire.mh)
    src: IPv6Address
    dst: IPv6Address
    home_address: Optional[IPv6Address] = None
    routing_address: Optional[IPv6Address] = None
    protect: Optional[IPv6Address] = None


@dataclass(frozen=True, slots=True)
class SendIcmp:
    """Send ICMPv6 ``message`` (DHAAD request or reply) from ``src`` to ``dst``."""

    message: Any  # a DHAAD request or reply (haha.wire.icmpv6)
    src: IPv6Address
    dst: IPv6Address


@dataclass(frozen=True, slots=True)
class InstallRoute:
    """Install or refresh forwarding for ``route`` (a :class:`haha.core.duties.ForwardingRoute`);
    ``IForwardingBackend.install(route)``. Idempotent: it replaces what was there for the home
    address."""

    route: Any  # a haha.core.duties.ForwardingRoute (which imports this module)


@dataclass(frozen=True, slots=True)
class RemoveRoute:
    """Stop forwarding for ``home_address`` and its prefixes; ``IForwardingBackend.remove``."""

    home_address: IPv6Address


@dataclass(frozen=True, slots=True)
class ProxyNd:
    """Start (``on``) or stop defending ``address`` on the home link by proxy Neighbour
    Discovery; ``IForwardingBackend.proxy_nd_start/stop``. Starting also sends an unsolicited
    Neighbour Advertisement (docs/protocol.md 6.7)."""

    address: IPv6Address
    on: bool = True


@dataclass(frozen=True, slots=True)
class AdvertisePrefix:
    """Start (``on``) or stop attracting traffic for ``prefix`` (draft 3.2);
    ``IForwardingBackend.advertise_prefix/withdraw_prefix``."""

    prefix: IPv6Network
    on: bool = True


@dataclass(frozen=True, slots=True)
class HoldAddress:
    """Start (``on``) or stop answering for home agent ``address`` (:mod:`haha.core.addrtakeover`):
    ``on_link`` True, on the shared home link (the address on the home interface, unsolicited
    Neighbour Advertisements; ``IForwardingBackend.hold_address(address, interface)``); False,
    as a /128 route for the operator's routing to redistribute
    (``hold_address(address, None)``). ``release_address`` undoes either."""

    address: IPv6Address
    on: bool = True
    on_link: bool = True


@dataclass(frozen=True, slots=True)
class TunnelUp:
    """Mobile node side: carry traffic of ``home_address`` (and a mobile router's ``prefixes``)
    through a bidirectional tunnel between ``care_of`` and ``home_agent``. Replaces any earlier
    tunnel of the node."""

    home_address: IPv6Address
    care_of: IPv6Address
    home_agent: IPv6Address
    prefixes: Tuple[IPv6Network, ...] = ()


@dataclass(frozen=True, slots=True)
class TunnelDown:
    """Mobile node side: remove the tunnel of ``home_address``."""

    home_address: IPv6Address


@dataclass(frozen=True, slots=True)
class AnnounceHome:
    """Mobile node side: back on its home link (deregistered, or given up on its binding),
    announce ``home_address`` with the node's own link-layer address (RFC 6275 11.5.4:
    unsolicited Neighbour Advertisements, so the neighbours forget the home agent's proxy
    entry). ``deregistered``: it came home through a deregistration (False: it had no binding
    to delete). Not returned when a stopping node deregisters (``MobileNode.leave``)."""

    home_address: IPv6Address
    deregistered: bool = True


@dataclass(frozen=True, slots=True)
class LeaveComplete:
    """Mobile node side: the deregistration of a stopping node (``MobileNode.leave``) is over:
    answered by a Binding Acknowledgement (``acknowledged``), or given up on, or cut short
    (the node moved or was stopped). Returned once per leave; a stopping service waits for it."""

    acknowledged: bool


@dataclass(frozen=True, slots=True)
class DrainComplete:
    """Home agent side: draining, and the last primary binding is gone (switched away,
    deregistered or expired); returned once per drain."""


class Event:
    """Something worth logging or counting: ``name`` plus keyword ``fields``.

    ``name`` is a :class:`haha.core.events.EventName` (every name, its level and its fields are
    listed there and in docs/core.md). Immutable; equal when name and fields are equal.
    """

    __slots__ = ("name", "fields")
    name: str  # a haha.core.events.EventName
    fields: Dict[str, Any]

    def __init__(self, name: str, **fields: Any) -> None:
        # The slots' own setters (below the class): a third cheaper than object.__setattr__,
        # and every step of every machine makes events.
        _set_name(self, name)
        _set_fields(self, fields)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Event is immutable")

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Event:
            return NotImplemented
        return self.name == other.name and self.fields == other.fields

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted((k, repr(v)) for k, v in self.fields.items()))))

    def __repr__(self) -> str:
        inner = "".join(f", {k}={v!r}" for k, v in self.fields.items())
        return f"Event({self.name!r}{inner})"


#: The setters of Event's two slots (member descriptors, read from the class dictionary).
_set_name: Callable[[Event, str], None] = Event.__dict__["name"].__set__
_set_fields: Callable[[Event, Dict[str, Any]], None] = Event.__dict__["fields"].__set__


#: Positional constructors (every field, in declaration order): the classes' own. The adapter
#: may build Inbound records with
#: ``make_inbound(message, src, dst, home_address, routing_address, protected_by)``.
make_inbound = maker(Inbound)
make_send = maker(Send)
make_install = maker(InstallRoute)

EFFECT_TYPES = (Send, SendIcmp, InstallRoute, RemoveRoute, ProxyNd, AdvertisePrefix, HoldAddress,
                TunnelUp, TunnelDown, AnnounceHome, DrainComplete, Event)
