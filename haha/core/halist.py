"""The Home Agent list (RFC 6275 10.1) of a home agent serving a prefix with peers (draft 5.4).

Entries come from one input only: Home Agent HELLO (draft 5.4), which the security policy
lets through only ESP-protected by the peer's own SA (or, in the lab mode without ESP, from a
configured or accepted peer address). The entry is keyed by the sender's signalling address (the
HELLO's IPv6 source); "Home Agent Address" is the address mobile nodes register with.
Freshness: a HELLO whose Sequence is not newer than the last one accepted (modulo 2**16) is
stale and dropped, unless it is more than :data:`RESTART_WINDOW` behind, which is taken as the
peer having restarted with a new random sequence (a reordered HELLO is never that far behind):
the entry then starts over as unsynchronised (:data:`RESTARTED`). Lifetime 0 deletes the sender.

Router Advertisements are not authenticated, so they never create, refresh, rank or delete an
entry: at most discovery proposes their sender as a candidate (``HomeAgent.add_peer``), which
becomes an entry by its own protected HELLO.

An entry expires when its lifetime passes without a new HELLO: the peer is then dead.

Synchronisation: a live peer is *in sync* (:attr:`HomeAgentEntry.in_sync`) once its answer to
our bulk request since it became live is complete (``answered``: it processes what we send and
answers since its last restart) and it is not itself waiting for our answer to a bulk request
(``holds``: a peer that asks for everything has lost its copies, until it acknowledges the end
marker of our answer). Only peers in sync are ranked (:meth:`HomeAgentList.ranked`) for
take-over and listed in DHAAD replies: a peer that is unknown, unkeyed, restarted or still
catching up holds no copies to take over from.
Ranking (docs/protocol.md 6.6): highest preference first, then lowest signalling address.
"""

from enum import StrEnum
from typing import Iterator
from ipaddress import IPv6Address, IPv6Network

from haha.wire.mh import HaHello

from .seqnum import distance

#: A HELLO this far behind the last accepted one (or further) means the peer restarted.
RESTART_WINDOW = 64


class HelloResult(StrEnum):
    """What :meth:`HomeAgentList.hello` made of a HELLO."""

    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    RESTARTED = "restarted"
    STALE = "stale"
    UNKNOWN = "unknown"


NEW = HelloResult.NEW
UPDATED = HelloResult.UPDATED
UNCHANGED = HelloResult.UNCHANGED
DELETED = HelloResult.DELETED
RESTARTED = HelloResult.RESTARTED
STALE = HelloResult.STALE
UNKNOWN = HelloResult.UNKNOWN


class HomeAgentEntry:
    """One live home agent: ``address`` is its signalling identity, ``home_agent`` the address
    mobile nodes use, ``source`` 'hello'; ``answered`` and ``holds`` as the module docstring
    says."""

    __slots__ = ("address", "home_agent", "preference", "lifetime", "interval", "expires",
                 "sequence", "prefixes", "source", "answered", "holds")

    def __init__(self, address: IPv6Address, home_agent: IPv6Address, preference: int,
                 lifetime: int, interval: int, expires: float, sequence: int | None,
                 prefixes: tuple[IPv6Network, ...], source: str) -> None:
        self.address = address
        self.home_agent = home_agent
        self.preference = preference
        self.lifetime = lifetime
        self.interval = interval
        self.expires = expires
        self.sequence = sequence
        self.prefixes = prefixes
        self.source = source
        self.answered = False
        self.holds = True

    @property
    def in_sync(self) -> bool:
        """Whether this peer may be ranked for take-over and listed in DHAAD replies."""
        return self.answered and self.holds

    def rank_key(self) -> tuple[int, int]:
        return (-self.preference, int(self.address))

    def __repr__(self) -> str:
        return (f"<HomeAgentEntry {self.address} ha={self.home_agent} pref={self.preference} "
                f"expires={self.expires:g} via {self.source}"
                f"{'' if self.in_sync else ' unsynced'}>")


def rank_key(preference: int, address: IPv6Address) -> tuple[int, int]:
    """Sort key of docs/protocol.md 6.6: highest preference, then lowest address."""
    return (-preference, int(address))


class HomeAgentList:
    """Live peers by signalling address."""

    def __init__(self) -> None:
        self.entries: dict[IPv6Address, HomeAgentEntry] = {}

    def __contains__(self, address: object) -> bool:
        return address in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[IPv6Address]:
        """The live peers' signalling addresses (so the list is a ``Collection`` of them)."""
        return iter(self.entries)

    def get(self, address: IPv6Address) -> HomeAgentEntry | None:
        return self.entries.get(address)

    def entry(self, address: IPv6Address) -> HomeAgentEntry:
        """The entry of live peer ``address``, which the caller knows is in the list (it was
        just added or updated, or ranked); KeyError if it is not."""
        return self.entries[address]

    def hello(self, src: IPv6Address, hello: HaHello, now: float) -> HelloResult:
        """Apply HELLO ``hello`` received from peer ``src``; returns NEW, UPDATED, UNCHANGED,
        DELETED (lifetime 0 from a live peer), STALE or UNKNOWN (lifetime 0 from a peer that
        was not in the list)."""
        e = self.entries.get(src)
        restarted = False
        if e is not None and e.sequence is not None:
            d = distance(hello.sequence, e.sequence)
            if -RESTART_WINDOW < d <= 0:
                return STALE
            restarted = d <= -RESTART_WINDOW
        if hello.lifetime == 0:
            if e is None:
                return UNKNOWN
            del self.entries[src]
            return DELETED
        prefixes = hello.prefixes
        if e is None:
            self.entries[src] = HomeAgentEntry(
                src, hello.home_agent, hello.preference, hello.lifetime, hello.interval,
                now + hello.lifetime, hello.sequence, prefixes, "hello")
            return NEW
        changed = (e.home_agent != hello.home_agent or e.preference != hello.preference
                   or e.lifetime != hello.lifetime or e.prefixes != prefixes)
        e.home_agent = hello.home_agent
        e.preference = hello.preference
        e.lifetime = hello.lifetime
        e.interval = hello.interval
        e.expires = now + hello.lifetime
        e.sequence = hello.sequence
        e.prefixes = prefixes
        e.source = "hello"
        if restarted:
            e.answered = False
            e.holds = True
            return RESTARTED
        return UPDATED if changed else UNCHANGED

    # -- synchronisation state (module docstring) ------------------------------------------

    def bulk_answered(self, address: IPv6Address) -> None:
        """``address`` completed its answer to our bulk request."""
        e = self.entries.get(address)
        if e is not None:
            e.answered = True

    def lost_state(self, address: IPv6Address) -> None:
        """``address`` asked for every binding: it holds no copies until it has our answer."""
        e = self.entries.get(address)
        if e is not None:
            e.holds = False

    def bulk_delivered(self, address: IPv6Address) -> None:
        """``address`` acknowledged the end marker of our answer to its bulk request."""
        e = self.entries.get(address)
        if e is not None:
            e.holds = True

    def remove(self, address: IPv6Address) -> HomeAgentEntry | None:
        return self.entries.pop(address, None)

    def next_expiry(self) -> float | None:
        if not self.entries:
            return None
        return min(e.expires for e in self.entries.values())

    def pop_expired(self, now: float) -> list[HomeAgentEntry]:
        """Remove and return the entries whose lifetime ran out at or before ``now``, in rank
        order."""
        dead = [e for e in self.entries.values() if e.expires <= now]
        for e in dead:
            del self.entries[e.address]
        dead.sort(key=HomeAgentEntry.rank_key)
        return dead

    def synced(self) -> list[HomeAgentEntry]:
        """Live entries in sync (module docstring), in no particular order."""
        return [e for e in self.entries.values() if e.answered and e.holds]

    def ranked(self) -> list[HomeAgentEntry]:
        """Live entries in sync, best first (docs/protocol.md 6.6): the candidates for take-over."""
        return sorted(self.synced(), key=HomeAgentEntry.rank_key)
