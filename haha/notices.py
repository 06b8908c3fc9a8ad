"""Warnings an operator needs about a running daemon that is not failing outright.

- :class:`CareOfWatch`: a mobile node whose care-of address is not assigned on any interface
  sends Binding Updates nobody can answer (RFC 6275 11.5: the care-of address is the source of
  its signalling). It warns at start and, while the address stays missing, again once per
  ``interval`` (rate-limited), and says when the address appears.
- :func:`report_left_behind`: a home agent that stops while it is still the primary of mobile
  nodes says how many and which (the first few home addresses), louder when no live peer holds
  copies to take them over.
"""

from collections.abc import Callable
from ipaddress import IPv6Address
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .logging import logger

if TYPE_CHECKING:
    from .core.homeagent import HomeAgent
    from .core.mobilenode import MobileNode

log = logger("haha.notices")

#: Where Linux lists the IPv6 addresses of the calling thread's network namespace.
IF_INET6 = "/proc/thread-self/net/if_inet6"


def local_addresses(path: str = IF_INET6) -> set[IPv6Address] | None:
    """The IPv6 addresses assigned on this host's interfaces (``/proc/net/if_inet6``), or
    None when they cannot be read."""
    out: set[IPv6Address] = set()
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if fields:
                    out.add(IPv6Address(int(fields[0], 16)))
    except (OSError, ValueError):
        return None
    return out


class CareOfWatch:
    """Warn while ``machine.care_of`` (a :class:`haha.core.mobilenode.MobileNode`) is not one
    of ``addresses()``: once when it is found missing, then at most once per ``interval``
    seconds of ``reactor`` time while it stays missing."""

    def __init__(self, reactor: IReactorTime, machine: "MobileNode",
                 addresses: Callable[[], set[IPv6Address] | None] = local_addresses,
                 interval: float = 60.0, interface: str | None = None) -> None:
        self.reactor = reactor
        self.machine = machine
        self.addresses = addresses
        self.interval = interval
        self.interface = interface
        self.missing_since: float | None = None
        self.warnings = 0
        self._watched: IPv6Address | None = None
        self._call: IDelayedCall | None = None

    def start(self) -> "CareOfWatch":
        """Check at once (and keep checking while the address is missing)."""
        self.check()
        return self

    def stop(self) -> None:
        """Stop checking."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def check(self) -> bool:
        """Look now (at start, after a move, and every ``interval`` while missing)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        care_of = self.machine.care_of
        have = self.addresses()
        if care_of is None or have is None or care_of in have:
            if self.missing_since is not None and care_of is not None and have is not None:
                log.info("care-of address {care_of} is assigned now", care_of=care_of)
            self.missing_since = None
            return True
        now = self.reactor.seconds()
        if care_of != self._watched:  # moved: a new address, a new first warning
            self.missing_since = None
        self._watched = care_of
        dev = f" dev {self.interface}" if self.interface else " dev IFACE"
        if self.missing_since is None:
            self.missing_since = now
            log.warn("care-of address {care_of} is not assigned on any interface: Binding "
                     "Updates sent from it cannot be answered and registration will keep "
                     "retrying; assign it (ip -6 addr add {care_of}/64{dev}) or correct "
                     "care-of-address", care_of=care_of, dev=dev)
        else:
            log.warn("care-of address {care_of} is still not assigned on any interface "
                     "({seconds:.0f} s); registration keeps retrying (state {state})",
                     care_of=care_of, seconds=now - self.missing_since,
                     state=self.machine.state)
        self.warnings += 1
        self._call = self.reactor.callLater(self.interval, self.check)
        return False


def report_left_behind(machine: "HomeAgent", limit: int = 5
                       ) -> tuple[int, list[IPv6Address]]:
    """Log the mobile nodes ``machine`` (a stopping :class:`haha.core.homeagent.HomeAgent`)
    is still the primary home agent of; returns ``(count, live peers)``."""
    primaries = sorted((b.home_address for b in machine.cache.primaries()), key=int)
    peers = [a for a, _ in machine.ranked() if a != machine.identity]
    if not primaries:
        return 0, peers
    shown = ", ".join(str(a) for a in primaries[:limit])
    more = f" and {len(primaries) - limit} more" if len(primaries) > limit else ""
    if peers:
        log.info("stopping as the primary of {count} mobile node(s) ({nodes}{more}); live "
                 "peers {peers} hold copies and take them over", count=len(primaries),
                 nodes=shown, more=more, peers=", ".join(map(str, peers)))
    else:
        log.warn("stopping with no live peer: {count} mobile node(s) are left without a home "
                 "agent until they register again with one that runs ({nodes}{more})",
                 count=len(primaries), nodes=shown, more=more)
    return len(primaries), peers


__all__ = ["CareOfWatch", "local_addresses", "report_left_behind"]
