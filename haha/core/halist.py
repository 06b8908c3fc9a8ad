"""The Home Agent list (RFC 6275 10.1) of a home agent serving a prefix with peers (draft 5.4).

Entries come from two inputs:

- Home Agent HELLO from peers on other links (draft 5.4): the entry is keyed by the sender's
  signalling address (the HELLO's IPv6 source); "Home Agent Address" is the address mobile nodes
  register with. Freshness: a HELLO whose Sequence is not newer than the last one accepted
  (modulo 2**16) is stale and dropped, unless it is more than :data:`RESTART_WINDOW` behind,
  which is taken as the peer having restarted with a new random sequence (a reordered HELLO is
  never that far behind). Lifetime 0 deletes the sender.
- Router Advertisements with the H flag and a Home Agent Information option (RFC 6275 7.4,
  10.5.1) from peers on the same link (docs/protocol.md 6.8): keyed by the global address carried in
  a Prefix Information option with the R flag; lifetime from the option, else Router Lifetime.

An entry expires when its lifetime passes without a new HELLO/RA: the peer is then dead.
Ranking (docs/protocol.md 6.6): highest preference first, then lowest signalling address.
"""

from .seqnum import distance

#: A HELLO this far behind the last accepted one (or further) means the peer restarted.
RESTART_WINDOW = 64

NEW = "new"
UPDATED = "updated"
UNCHANGED = "unchanged"
DELETED = "deleted"
STALE = "stale"
UNKNOWN = "unknown"


class HomeAgentEntry:
    """One live home agent: ``address`` is its signalling identity, ``home_agent`` the address
    mobile nodes use, ``source`` 'hello' or 'ra'."""

    __slots__ = ("address", "home_agent", "preference", "lifetime", "interval", "expires",
                 "sequence", "prefixes", "source")

    def __init__(self, address, home_agent, preference, lifetime, interval, expires, sequence,
                 prefixes, source):
        self.address = address
        self.home_agent = home_agent
        self.preference = preference
        self.lifetime = lifetime
        self.interval = interval
        self.expires = expires
        self.sequence = sequence
        self.prefixes = prefixes
        self.source = source

    def rank_key(self):
        return (-self.preference, int(self.address))

    def __repr__(self):
        return (f"<HomeAgentEntry {self.address} ha={self.home_agent} pref={self.preference} "
                f"expires={self.expires:g} via {self.source}>")


def rank_key(preference, address):
    """Sort key of docs/protocol.md 6.6: highest preference, then lowest address."""
    return (-preference, int(address))


class HomeAgentList:
    """Live peers by signalling address."""

    def __init__(self):
        self.entries = {}

    def __contains__(self, address):
        return address in self.entries

    def __len__(self):
        return len(self.entries)

    def get(self, address):
        return self.entries.get(address)

    def hello(self, src, hello, now):
        """Apply HELLO ``hello`` received from peer ``src``; returns NEW, UPDATED, UNCHANGED,
        DELETED (lifetime 0 from a live peer), STALE or UNKNOWN (lifetime 0 from a peer that
        was not in the list)."""
        e = self.entries.get(src)
        if e is not None and e.sequence is not None:
            d = distance(hello.sequence, e.sequence)
            if -RESTART_WINDOW < d <= 0:
                return STALE
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
        return UPDATED if changed else UNCHANGED

    def advertisement(self, address, preference, lifetime, now):
        """Apply a Router Advertisement's Home Agent information for peer ``address``."""
        e = self.entries.get(address)
        if lifetime == 0:
            if e is None:
                return UNKNOWN
            del self.entries[address]
            return DELETED
        if e is None:
            self.entries[address] = HomeAgentEntry(
                address, address, preference, lifetime, 0, now + lifetime, None, (), "ra")
            return NEW
        changed = e.preference != preference or e.lifetime != lifetime
        e.preference = preference
        e.lifetime = lifetime
        e.expires = now + lifetime
        e.source = "ra"
        return UPDATED if changed else UNCHANGED

    def remove(self, address):
        return self.entries.pop(address, None)

    def next_expiry(self):
        if not self.entries:
            return None
        return min(e.expires for e in self.entries.values())

    def pop_expired(self, now):
        """Remove and return the entries whose lifetime ran out at or before ``now``, in rank
        order."""
        dead = [e for e in self.entries.values() if e.expires <= now]
        for e in dead:
            del self.entries[e.address]
        dead.sort(key=HomeAgentEntry.rank_key)
        return dead

    def ranked(self):
        """Live entries, best first (docs/protocol.md 6.6)."""
        return sorted(self.entries.values(), key=HomeAgentEntry.rank_key)
