"""Peers on the home link, from Router Advertisements (RFC 6275 7.1, 7.2, 7.4, 10.5.1).

A home agent on a shared home link advertises with the H flag set, its global address in a Prefix
Information option with the R flag, and its preference and lifetime in a Home Agent Information
option. This strategy reports every such address as a peer for as long as the advertised home agent
lifetime (or, without the option, the router lifetime) lasts; a lifetime of zero withdraws it at
once (which forgets a candidate that is not live, never a live peer). The daemon feeds it the
advertisements it receives (IRouterAdvertisementListener).

Advertisements are not authenticated, so what this strategy reports is only a candidate: the
home agent greets it and takes it as a live peer only from its own ESP-protected HELLO, and a
withdrawal never ends a live peer (:mod:`haha.core.candidates`). Only addresses the daemon
could accept are tracked (``wanted``: with ESP, those that have a key in ``[peer-keys]``;
otherwise those inside ``[peers] authorised``), the others are counted (``unwanted``); and at
most ``limit`` addresses are tracked (``[peers] max-candidates``): further ones are ignored and
counted (``refused``) until tracked ones expire. A flood of advertisements naming phantom home
agents costs bounded memory and cannot crowd out a real one.
"""

from ipaddress import IPv6Address
from typing import Any, Callable, Iterable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from ..inifile import Section
from ..interfaces import (
    ICounterSource,
    IPeerDiscovery,
    IPeerListener,
    IRouterAdvertisementListener,
)
from ..wire.icmpv6 import PI_R, RA_H, PrefixInformation, RouterAdvertisement

#: Whether the daemon could accept a peer at this address (``wanted``).
Wanted = Callable[[IPv6Address], bool]


@implementer(IPeerDiscovery, IRouterAdvertisementListener, ICounterSource)
class LinkDiscovery:
    name = "link"

    def __init__(self, clock: IReactorTime, own_addresses: Iterable[IPv6Address] = (),
                 limit: int = 64, wanted: Optional[Wanted] = None) -> None:
        self.clock = clock
        self.own = frozenset(own_addresses)
        self.limit = limit
        self.wanted = wanted
        self.ignored = 0
        self.refused = 0
        self.unwanted = 0
        self._expiry: dict[IPv6Address, IDelayedCall] = {}
        self._listener: Optional[IPeerListener] = None

    @property
    def counters(self) -> dict[str, int]:
        """For the daemon's metrics: advertisements ignored, addresses refused (table full)."""
        return {"ignored": self.ignored, "refused": self.refused, "unwanted": self.unwanted,
                "tracked": len(self._expiry)}

    def start(self, listener: IPeerListener) -> None:
        self._listener = listener

    def stop(self) -> None:
        self._listener = None
        for call in self._expiry.values():
            if call.active():
                call.cancel()
        self._expiry.clear()

    def peers(self) -> frozenset[IPv6Address]:
        return frozenset(self._expiry)

    def router_advertisement(self, source: IPv6Address,
                             advertisement: RouterAdvertisement) -> None:
        if self._listener is None:
            return
        if not advertisement.flags & RA_H:
            self.ignored += 1
            return
        info = advertisement.home_agent_information
        lifetime = info.lifetime if info is not None else advertisement.router_lifetime
        addresses = [
            o.prefix for o in advertisement.options
            if type(o) is PrefixInformation and o.flags & PI_R and o.prefix not in self.own
        ]
        if not addresses:
            self.ignored += 1
        for a in addresses:
            call = self._expiry.pop(a, None)
            if call is not None and call.active():
                call.cancel()
            if lifetime == 0:
                if call is not None:
                    self._listener.peer_disappeared(a, self.name)
                continue
            if call is None:
                if self.wanted is not None and not self.wanted(a):
                    self.unwanted += 1
                    continue
                if len(self._expiry) >= self.limit:
                    self.refused += 1
                    continue
            self._expiry[a] = self.clock.callLater(lifetime, self._expired, a)
            if call is None:
                self._listener.peer_appeared(a, self.name)

    def _expired(self, address: IPv6Address) -> None:
        self._expiry.pop(address, None)
        if self._listener is not None:
            self._listener.peer_disappeared(address, self.name)


def build(options: Section, reactor: Any, config: Any) -> LinkDiscovery:
    """Plugin factory. ``[discovery:link]`` takes no keys: the daemon feeds the advertisements
    it receives on its home interface."""
    return LinkDiscovery(reactor, (config.address, config.haha_address),
                         getattr(config, "max_candidates", 64), _wanted(config))


def _wanted(config: Any) -> Wanted:
    """What the daemon could accept: keyed peers with ESP, else the authorised prefixes."""
    security = getattr(config, "security", None)
    if security is not None and security.mode == "esp":
        keyed = frozenset(security.peer_keys)
        return keyed.__contains__
    authorised = tuple(getattr(config, "authorised", ()))
    static = frozenset(getattr(config, "peers", ()))
    return lambda a: a in static or any(a in p for p in authorised)
