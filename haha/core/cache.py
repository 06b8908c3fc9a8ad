"""The binding cache: primary entries and Binding Cache Copies (draft section 2).

A :class:`Binding` is one entry. ``primary`` is None for a binding this home agent holds as the
mobile node's primary home agent, and the signalling address of the primary home agent for a
copy (a BCC "MUST be marked as BCC", draft 2). Lookups: by home address (a dict) and by Mobile
Network Prefix, longest match (one dict per prefix length in use). Expiry: a heap of
``(expires, order, home address)`` with lazy deletion, so a refresh costs one push and no
search; stale heap items are skipped when they surface. ``order`` (a running count) breaks
ties, so entries expiring together never compare addresses (``IPv6Address.__lt__`` made mass
expiry cost seconds at 100,000 bindings). Entries are ``__slots__`` objects holding the
decoded addresses by reference: about 600 octets per binding all told (``bench/core.py``).

Digests (anti-entropy, docs/protocol.md "Binding digests"): each entry keeps
:func:`bce_digest` of what a BIU would carry of it, and the cache keeps, per primary (None for
this home agent's own), the count of entries and the XOR of their digests, updated with every
change: :meth:`BindingCache.digest` costs nothing however large the cache.
"""

import heapq
import struct
from hashlib import blake2b
from collections.abc import Iterable, Iterator
from ipaddress import IPv6Address, IPv6Network
from itertools import count
from typing import Literal

from haha.wire.addresses import address_int

_FLAGS_SEQUENCE = struct.Struct("!HH")
_PERSON = b"haha-bce-1"


def bce_digest(home_address: IPv6Address, care_of: IPv6Address, flags: int, sequence: int,
               prefixes: Iterable[IPv6Network] = ()) -> int:
    """The 64-bit digest of one binding as a BIU carries it (docs/protocol.md, "Binding
    digests"): BLAKE2b with an 8-octet output and personalisation ``haha-bce-1`` over Home
    Address 128 | Care-of Address 128 | Flags 16 | Sequence 16, then for each Mobile Network
    Prefix in order Prefix Length 8 | Prefix 128; read as a big-endian integer."""
    data = ((address_int(home_address) << 128) | address_int(care_of)).to_bytes(32, "big") \
        + _FLAGS_SEQUENCE.pack(flags, sequence)
    for p in prefixes:
        data += bytes((p.prefixlen,)) + address_int(p.network_address).to_bytes(16, "big")
    return int.from_bytes(blake2b(data, digest_size=8, person=_PERSON).digest(), "big")


_ONES = (1 << 128) - 1
_MASKS = [(_ONES << (128 - n)) & _ONES for n in range(129)]


class Binding:
    """One binding cache entry (RFC 6275 9.1 conceptual fields, plus the draft's primary HA).

    ``lifetime`` is the granted lifetime in seconds and ``expires`` the absolute time it runs
    out; ``local`` the address of this home agent the mobile node registered with (primaries
    only); ``touched`` the last time a registration or a BIU set the entry.
    """

    __slots__ = ("home_address", "care_of", "flags", "sequence", "lifetime", "expires",
                 "prefixes", "primary", "local", "touched", "digest")

    def __init__(self, home_address: IPv6Address, care_of: IPv6Address, flags: int,
                 sequence: int, lifetime: int, expires: float,
                 prefixes: tuple[IPv6Network, ...] = (), primary: IPv6Address | None = None,
                 local: IPv6Address | None = None, touched: float = 0.0) -> None:
        self.home_address = home_address
        self.care_of = care_of
        self.flags = flags
        self.sequence = sequence
        self.lifetime = lifetime
        self.expires = expires
        self.prefixes = prefixes
        self.primary = primary
        self.local = local
        self.touched = touched
        self.digest = bce_digest(home_address, care_of, flags, sequence, prefixes)

    @property
    def is_copy(self) -> bool:
        return self.primary is not None

    def remaining(self, now: float) -> float:
        return max(0.0, self.expires - now)

    def __repr__(self) -> str:
        kind = "primary" if self.primary is None else f"copy of {self.primary}"
        return (f"<Binding {self.home_address} -> {self.care_of} seq {self.sequence} "
                f"{kind} expires {self.expires:g}{' ' + str(self.prefixes) if self.prefixes else ''}>")


class BindingCache:
    """Bindings by home address, by Mobile Network Prefix, and by expiry."""

    def __init__(self) -> None:
        self._by_home: dict[IPv6Address, Binding] = {}
        self._by_prefix: dict[int, dict[int, Binding]] = {}  # prefix length -> {network: b}
        self._lengths: list[int] = []  # prefix lengths in use, longest first
        self._heap: list[tuple[float, int, IPv6Address]] = []
        self._order = count()
        self.primary_count = 0
        self._digests: dict[IPv6Address | None, list[int]] = {}  # primary (None: ours) -> [count, XOR of entry digests]

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_home)

    def __iter__(self) -> Iterator[Binding]:
        return iter(list(self._by_home.values()))

    def __contains__(self, home_address: object) -> bool:
        return home_address in self._by_home

    def get(self, home_address: IPv6Address) -> Binding | None:
        return self._by_home.get(home_address)

    def lookup_prefix(self, address: IPv6Address) -> Binding | None:
        """The binding whose Mobile Network Prefix holds ``address`` (IPv6Address or
        IPv6Network's network address), longest prefix first; None if none does."""
        a = int(address)
        for n in self._lengths:
            b = self._by_prefix[n].get(a & _MASKS[n])
            if b is not None:
                return b
        return None

    def lookup(self, address: IPv6Address) -> Binding | None:
        """The binding responsible for destination ``address``: the home address itself, else
        the longest matching Mobile Network Prefix."""
        b = self._by_home.get(address)
        return b if b is not None else self.lookup_prefix(address)

    def primaries(self) -> list[Binding]:
        return [b for b in self._by_home.values() if b.primary is None]

    def digest(self, primary: IPv6Address | None = None) -> tuple[int, int]:
        """``(count, digest)`` over the entries whose primary is ``primary`` (None: this home
        agent's own primaries): what a HELLO's Binding Digest option carries."""
        d = self._digests.get(primary)
        return (d[0], d[1]) if d is not None else (0, 0)

    def _account(self, primary: IPv6Address | None, digest: int, sign: int) -> None:
        d = self._digests.get(primary)
        if d is None:
            d = self._digests[primary] = [0, 0]
        d[0] += sign
        d[1] ^= digest
        if not d[0]:
            del self._digests[primary]

    def copies_of(self, peer: IPv6Address) -> list[Binding]:
        # Compared as integers: IPv6Address.__eq__ (Python code) for each of 100,000 entries
        # cost tens of milliseconds in one call.
        key = address_int(peer)
        return [b for b in self._by_home.values()
                if b.primary is not None and address_int(b.primary) == key]

    # -- changes ---------------------------------------------------------------------------

    def store(self, home_address: IPv6Address, care_of: IPv6Address, flags: int, sequence: int,
              lifetime: int, expires: float, prefixes: tuple[IPv6Network, ...],
              primary: IPv6Address | None, local: IPv6Address | None, touched: float,
              existing: Binding | None | Literal[False] = False) -> Binding:
        """Create or update the entry of ``home_address``; returns it. ``existing`` may pass
        the entry (or None) the caller just looked up, saving a second lookup."""
        b = self._by_home.get(home_address) if existing is False else existing
        if b is None:
            b = Binding(home_address, care_of, flags, sequence, lifetime, expires, prefixes,
                        primary, local, touched)
            self._by_home[home_address] = b
            if prefixes:
                self._index(b, prefixes)
            if primary is None:
                self.primary_count += 1
            self._account(primary, b.digest, 1)
            heapq.heappush(self._heap, (expires, next(self._order), home_address))
            return b
        if b.sequence != sequence or b.care_of != care_of or b.flags != flags \
                or b.prefixes != prefixes or b.primary != primary:
            self._account(b.primary, b.digest, -1)
            if b.sequence != sequence or b.care_of != care_of or b.flags != flags \
                    or b.prefixes != prefixes:
                b.digest = bce_digest(home_address, care_of, flags, sequence, prefixes)
            self._account(primary, b.digest, 1)
        if b.prefixes != prefixes:
            if b.prefixes:
                self._unindex(b, b.prefixes)
            if prefixes:
                self._index(b, prefixes)
            b.prefixes = prefixes
        if (b.primary is None) != (primary is None):
            self.primary_count += 1 if primary is None else -1
        b.care_of = care_of
        b.flags = flags
        b.sequence = sequence
        b.lifetime = lifetime
        b.primary = primary
        b.local = local
        b.touched = touched
        if b.expires != expires:
            b.expires = expires
            heapq.heappush(self._heap, (expires, next(self._order), home_address))
        return b

    def remove(self, home_address: IPv6Address) -> Binding | None:
        """Remove and return the entry of ``home_address`` (None if there is none)."""
        b = self._by_home.pop(home_address, None)
        if b is not None:
            if b.prefixes:
                self._unindex(b, b.prefixes)
            if b.primary is None:
                self.primary_count -= 1
            self._account(b.primary, b.digest, -1)
        return b

    def next_expiry(self) -> float | None:
        """The earliest expiry time of an entry, or None; after many removals possibly an
        earlier time (a stale item, skipped at most 64 per call so no call is long)."""
        heap = self._heap
        by_home = self._by_home
        for _ in range(64):  # bounded: past that, a stale top only wakes pop_expired early
            if not heap:
                return None
            t, _, hoa = heap[0]
            b = by_home.get(hoa)
            if b is not None and b.expires == t:
                return t
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_expired(self, now: float, limit: int | None = None) -> list[Binding]:
        """Remove and return the entries whose lifetime ran out at or before ``now``, looking
        at most ``limit`` heap items (the rest stay due: ``next_expiry`` is then already
        past)."""
        heap = self._heap
        by_home = self._by_home
        out: list[Binding] = []
        popped = 0
        while heap and heap[0][0] <= now:
            if limit is not None and popped >= limit:
                break  # stale items count: each call does at most ``limit`` pops
            popped += 1
            t, _, hoa = heapq.heappop(heap)
            b = by_home.get(hoa)
            if b is not None and b.expires == t:
                self.remove(hoa)
                out.append(b)
        if len(heap) > 64 and len(heap) > 3 * len(by_home):
            order = self._order
            self._heap = [(b.expires, next(order), b.home_address) for b in by_home.values()]
            heapq.heapify(self._heap)
        return out

    def _index(self, b: Binding, prefixes: Iterable[IPv6Network]) -> None:
        for p in prefixes:
            n = p.prefixlen
            table = self._by_prefix.get(n)
            if table is None:
                table = self._by_prefix[n] = {}
                self._lengths = sorted(self._by_prefix, reverse=True)
            table[int(p.network_address)] = b

    def _unindex(self, b: Binding, prefixes: Iterable[IPv6Network]) -> None:
        for p in prefixes:
            n = p.prefixlen
            table = self._by_prefix.get(n)
            if table is None:
                continue
            key = int(p.network_address)
            if table.get(key) is b:
                del table[key]
                if not table:
                    del self._by_prefix[n]
                    self._lengths = sorted(self._by_prefix, reverse=True)
