"""Forwarding duties per binding: what a backend must install and remove.

Draft section 3 decides who forwards what:

- With a home link ('home-link', 'separate-links'; 3.1), only the primary home agent intercepts
  a home address, by proxy Neighbour Discovery, and tunnels to the care-of address. Copies
  install nothing; on take-over the new primary starts both at once (docs/protocol.md 6.7).
- Without a home link ('no-home-link'; 3.2), every home agent advertises the aggregated home
  prefix and forwards from its copies as well as its primaries; nobody proxies.

:func:`duties_of` gives the duties of one binding, :func:`transition` the effects that move a
backend from one set of duties to another, so an update that changes nothing emits nothing.
"""

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Optional

from haha.wire.records import maker
from .effects import ProxyNd, RemoveRoute, make_install

if TYPE_CHECKING:
    from .cache import Binding
    from .settings import HomeAgentSettings


@dataclass(frozen=True, slots=True)
class ForwardingRoute:
    """Forward ``home_address`` and the mobile network ``prefixes`` through a bidirectional
    tunnel between ``local`` (this home agent's address) and ``care_of``. ``primary`` is False
    when the route comes from a Binding Cache Copy (draft 3.2 forwarding from copies)."""

    home_address: IPv6Address
    care_of: IPv6Address
    local: IPv6Address
    prefixes: tuple[IPv6Network, ...] = ()
    primary: bool = True


_route = maker(ForwardingRoute)

#: What a binding asks of the backend: its route (None: none) and whether to proxy ND.
Duties = tuple[Optional[ForwardingRoute], bool]


def duties_of(settings: "HomeAgentSettings", binding: "Binding | None") -> Duties:
    """``(route or None, proxy: bool)`` for ``binding`` under ``settings``; None: no binding."""
    if binding is None:
        return None, False
    if binding.primary is None:
        return (
            _route(binding.home_address, binding.care_of, binding.local or settings.address,
                   binding.prefixes, True),
            settings.proxies_nd,
        )
    if settings.advertises_prefix:
        return (
            _route(binding.home_address, binding.care_of, settings.address, binding.prefixes,
                   False),
            False,
        )
    return None, False


def transition(home_address: IPv6Address, old: Duties, new: Duties, out: list) -> None:
    """Append to ``out`` the effects that turn duties ``old`` into ``new`` (both as returned by
    :func:`duties_of`)."""
    old_route, old_proxy = old
    new_route, new_proxy = new
    if new_route != old_route:
        if new_route is not None:
            out.append(make_install(new_route))
        else:
            out.append(RemoveRoute(home_address))
    if new_proxy != old_proxy:
        out.append(ProxyNd(home_address, new_proxy))
