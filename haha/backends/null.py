"""The ``null`` forwarding backend: records what it is asked to do and changes nothing.

For unprivileged runs (the UDP development transport), for embedders that forward packets
themselves, and for tests: :meth:`NullBackend.snapshot` returns the intent (routes, proxied
addresses, advertised prefixes) so a test can assert on the forwarding duties the core computed.
"""

from __future__ import annotations

from collections import deque
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, Deque, Dict, Optional, Set, Tuple

from zope.interface import implementer

from ..interfaces import IAddressHolder, IForwardingBackend
from .proxyset import ProxiedSet

if TYPE_CHECKING:
    from .context import BackendContext


def check_route(route: Any) -> Any:
    """Raise ``TypeError`` unless ``route`` has ForwardingRoute's fields with usable types."""
    for field in ("home_address", "care_of", "local"):
        value = getattr(route, field, None)
        if not isinstance(value, IPv6Address):
            raise TypeError(f"route.{field} is {value!r}, not an IPv6Address")
    prefixes = getattr(route, "prefixes", ())
    for p in prefixes:
        if not isinstance(p, IPv6Network):
            raise TypeError(f"route prefix {p!r} is not an IPv6Network")
    return route


def route_json(route: Any) -> Dict[str, Any]:
    return {
        "home_address": str(route.home_address),
        "care_of": str(route.care_of),
        "local": str(route.local),
        "prefixes": [str(p) for p in route.prefixes],
        "primary": bool(getattr(route, "primary", True)),
    }


#: How many calls :attr:`NullBackend.history` keeps.
HISTORY = 1000


@implementer(IForwardingBackend, IAddressHolder)
class NullBackend:
    """Intent only. ``history`` lists the last :data:`HISTORY` calls as ``(method,
    argument...)`` (bounded: a daemon running with ``backend = null`` registers nodes for
    ever)."""

    name = "null"

    def __init__(self) -> None:
        self.routes: Dict[IPv6Address, Any] = {}
        self.proxied: ProxiedSet[Optional[str]] = ProxiedSet()  # (address, interface) pairs
        self.prefixes: Set[IPv6Network] = set()
        self.held: Dict[IPv6Address, Optional[str]] = {}  # address -> interface (None: route)
        self.history: Deque[Tuple[Any, ...]] = deque(maxlen=HISTORY)
        self.running = False

    def capabilities(self) -> frozenset[str]:
        return frozenset({"tunnel", "proxy-nd", "prefix-route"})

    def start(self) -> None:
        self.running = True
        self.history.append(("start",))

    def stop(self) -> None:
        self.running = False
        self.routes.clear()
        self.proxied.clear()
        self.prefixes.clear()
        self.held.clear()
        self.history.append(("stop",))

    def install(self, route: Any) -> None:
        check_route(route)
        self.routes[route.home_address] = route
        self.history.append(("install", route))

    def remove(self, home_address: IPv6Address) -> None:
        self.routes.pop(home_address, None)
        self.history.append(("remove", home_address))

    def proxy_nd_start(self, address: IPv6Address, interface: Optional[str]) -> None:
        self.proxied.add((address, interface))
        self.history.append(("proxy_nd_start", address, interface))

    def proxy_nd_stop(self, address: IPv6Address, interface: Optional[str]) -> None:
        self.proxied.discard((address, interface))
        self.history.append(("proxy_nd_stop", address, interface))

    def advertise_prefix(self, prefix: IPv6Network) -> None:
        self.prefixes.add(prefix)
        self.history.append(("advertise_prefix", prefix))

    def withdraw_prefix(self, prefix: IPv6Network) -> None:
        self.prefixes.discard(prefix)
        self.history.append(("withdraw_prefix", prefix))

    def hold_address(self, address: IPv6Address, interface: Optional[str]) -> None:
        if not isinstance(address, IPv6Address):
            raise TypeError(f"{address!r} is not an IPv6Address")
        self.held[address] = interface
        self.history.append(("hold_address", address, interface))

    def release_address(self, address: IPv6Address, interface: Optional[str] = None) -> None:
        self.held.pop(address, None)
        self.history.append(("release_address", address))

    def snapshot(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "routes": [route_json(self.routes[h]) for h in sorted(self.routes)],
            "proxy_nd": [[str(a), i] for a, i in sorted(self.proxied)],
            "prefixes": [str(p) for p in sorted(self.prefixes)],
            "held": [[str(a), i] for a, i in sorted(self.held.items())],
        }


def build(context: BackendContext) -> NullBackend:
    """The ``null`` backend plugin's factory (``[backend:null]`` has no keys; the context's
    transport and ownership are not needed: nothing is installed)."""
    return NullBackend()
