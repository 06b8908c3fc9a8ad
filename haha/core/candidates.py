"""The peers a home agent will listen to: static ones and a bounded table of candidates.

Static peers (configuration) are always known. Discovery (``HomeAgent.add_peer``: Router
Advertisements on the home link, DNS) is not authenticated, so what it proposes is only a
*candidate*: the home agent greets it with a HELLO, and it becomes a live peer only by its own
protected HELLO (:mod:`haha.core.halist`). Nothing unauthenticated can make a candidate live,
refresh, rank or delete it.

The candidate table is bounded (``limit``): a flood of proposed addresses cannot grow memory.
When it is full, the oldest candidate that is not live and has had ``hold`` seconds to answer
makes room; if there is none, the new proposal is refused (:data:`FULL`, counted by the caller).
Sans-IO: time is passed in.
"""

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from enum import StrEnum
from ipaddress import IPv6Address


class Proposal(StrEnum):
    """What :meth:`KnownPeers.add` made of a proposed address."""

    ADDED = "added"
    KNOWN = "known"
    FULL = "full"


ADDED = Proposal.ADDED
KNOWN = Proposal.KNOWN
FULL = Proposal.FULL


class KnownPeers:
    """Static peers plus at most ``limit`` candidates (module docstring).

    ``live`` is a callable telling whether an address is a live peer (never evicted). Behaves
    as a set of addresses for ``in``, ``len`` and iteration (static peers first).
    """

    def __init__(self, static: Iterable[IPv6Address], limit: int, hold: float,
                 live: Callable[[IPv6Address], bool]) -> None:
        if limit < 0:
            raise ValueError(f"candidate limit {limit} must not be negative")
        self.static = frozenset(static)
        self.limit = limit
        self.hold = hold
        self._live = live
        self._candidates: OrderedDict[IPv6Address, float] = OrderedDict()  # address -> time proposed, oldest first

    def __contains__(self, address: object) -> bool:
        return address in self.static or address in self._candidates

    def __iter__(self) -> Iterator[IPv6Address]:
        yield from self.static
        yield from tuple(self._candidates)

    def __len__(self) -> int:
        return len(self.static) + len(self._candidates)

    @property
    def candidates(self) -> int:
        """How many discovered (non-static) peers are held."""
        return len(self._candidates)

    def add(self, address: IPv6Address, now: float) -> Proposal:
        """Propose ``address``: ADDED, KNOWN (already there) or FULL (refused)."""
        if address in self:
            return KNOWN
        if len(self._candidates) >= self.limit and not self._evict(now):
            return FULL
        self._candidates[address] = now
        return ADDED

    def _evict(self, now: float) -> bool:
        for address, since in self._candidates.items():
            if since + self.hold > now:
                return False  # oldest first: nothing older is left to try
            if not self._live(address):
                del self._candidates[address]
                return True
        return False

    def discard(self, address: IPv6Address) -> None:
        """Forget a candidate (static peers stay)."""
        self._candidates.pop(address, None)
