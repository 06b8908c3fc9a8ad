"""The binding cache: primary entries and Binding Cache Copies (draft section 2).

A :class:`Binding` is one entry. ``primary`` is None for a binding this home agent holds as the
mobile node's primary home agent, and the signalling address of the primary home agent for a
copy (a BCC "MUST be marked as BCC", draft 2). Lookups: by home address (a dict) and by Mobile
Network Prefix, longest match (one dict per prefix length in use). Expiry: a wheel of
one-second buckets, each a list of the bindings expiring in that second, with lazy deletion: a
refresh appends the binding to its new bucket (nothing when the second is the same) and no
search; an entry whose binding is gone or now expires in another second is skipped when its
bucket comes up. A binding costs its bucket one list slot (8 octets; the heap of ``(expires,
order, home address)`` tuples this replaces cost about 100), entries are never compared
(``IPv6Address.__lt__`` once made mass expiry cost seconds at 100,000 bindings), and a heap
orders only the buckets' seconds. The bucket of the current second is sorted once when it
comes up, so bindings expiring a few milliseconds apart cost no rescan. Entries are
``__slots__`` objects holding the decoded addresses by reference (``bench/memory.py``).

Digests (anti-entropy, docs/protocol.md "Binding digests"): the cache keeps, per primary (None
for this home agent's own), the count of entries and the XOR of their :func:`bce_digest` (of
what a BIU would carry of each), updated with every change: :meth:`BindingCache.digest` costs
nothing however large the cache. An entry's own digest is computed when it changes or goes
(``Binding.digest``), not kept: 44 octets less per binding for one more hash per change.
"""

import heapq
import struct
from hashlib import blake2b
from collections.abc import Iterable, Iterator
from ipaddress import IPv6Address, IPv6Network
from operator import attrgetter
from typing import Literal

from haha.wire.addresses import address_int

_FLAGS_SEQUENCE = struct.Struct("!HH")
_PERSON = b"haha-bce-1"
_BLAKE_BCE = blake2b(digest_size=8, person=_PERSON)
_from_bytes = int.from_bytes


def bce_digest(home_address: IPv6Address, care_of: IPv6Address, flags: int, sequence: int,
               prefixes: Iterable[IPv6Network] = ()) -> int:
    """The 64-bit digest of one binding as a BIU carries it (docs/protocol.md, "Binding
    digests"): BLAKE2b with an 8-octet output and personalisation ``haha-bce-1`` over Home
    Address 128 | Care-of Address 128 | Flags 16 | Sequence 16, then for each Mobile Network
    Prefix in order Prefix Length 8 | Prefix 128; read as a big-endian integer."""
    data = ((address_int(home_address) << 128) | address_int(care_of)).to_bytes(32, "big") \
        + _FLAGS_SEQUENCE.pack(flags, sequence)
    if prefixes:
        for p in prefixes:
            data += bytes((p.prefixlen,)) + address_int(p.network_address).to_bytes(16, "big")
    # A copy of the keyed, personalised state costs half of a new BLAKE2b with its parameters.
    h = _BLAKE_BCE.copy()
    h.update(data)
    return _from_bytes(h.digest(), "big")


_EXPIRES = attrgetter("expires")
#: A bucket this short is scanned for its exact earliest expiry (next_expiry).
_SCAN = 64
#: At most this many distinct addresses, lifetimes and flags values are shared between bindings.
_SHARED = 256


def _shared(table: dict[int, int], value: int) -> int:
    """The one ``int`` object kept in ``table`` for ``value`` (kept while fewer than
    :data:`_SHARED` are), or ``value`` itself: equal values stored by many bindings are one
    object, not one each."""
    same = table.get(value)
    if same is not None:
        return same
    if len(table) < _SHARED:
        table[value] = value
    return value


#: ``touched`` of every primary (Binding).
_UNTOUCHED = 0.0

_ONES = (1 << 128) - 1
_MASKS = [(_ONES << (128 - n)) & _ONES for n in range(129)]


class Binding:
    """One binding cache entry (RFC 6275 9.1 conceptual fields, plus the draft's primary HA).

    ``lifetime`` is the granted lifetime in seconds and ``expires`` the absolute time it runs
    out; ``local`` the address of this home agent the mobile node registered with (primaries
    only); ``touched`` the last time a registration or a BIU set a copy (what the sweep after
    a bulk answer looks at); a primary, which nothing sweeps, keeps 0 there, not a time
    object of its own (:meth:`BindingCache.store`: 24 octets per primary).
    """

    __slots__ = ("home_address", "care_of", "flags", "sequence", "lifetime", "expires",
                 "prefixes", "primary", "local", "touched")

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

    @property
    def digest(self) -> int:
        """:func:`bce_digest` of the entry as it is now."""
        return bce_digest(self.home_address, self.care_of, self.flags, self.sequence,
                          self.prefixes)

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
        # Keyed by the address's integer: hashing and comparing an IPv6Address are Python
        # calls (about 1 us a lookup), an int's are not (0.1 us).
        self._by_home: dict[int, Binding] = {}
        self._by_prefix: dict[int, dict[int, Binding]] = {}  # prefix length -> {network: b}
        self._lengths: list[int] = []  # prefix lengths in use, longest first
        # second -> bindings expiring in it (some stale: module docstring)
        self._wheel: dict[int, list[Binding]] = {}
        self._seconds: list[int] = []  # heap of the wheel's keys
        self._sorted: set[int] = set()  # buckets sorted latest first (none appended since)
        self._items = 0  # entries in the wheel, stale ones included
        self._next: float | None = None  # next_expiry(), when _next_valid
        self._next_valid = False
        # One object per distinct local or primary address (home agents' addresses) and per
        # distinct lifetime and flags value: each decoded message brings its own, which every
        # binding would otherwise keep (about 100 octets per address, 28 per integer: flags
        # such as A|H are above the 256 small integers Python shares).
        self._addresses: dict[int, IPv6Address] = {}  # keyed by integer: hashing is cheap
        self._lifetimes: dict[int, int] = {}
        self._flags: dict[int, int] = {}
        self.primary_count = 0
        self._digests: dict[IPv6Address | None, list[int]] = {}  # primary (None: ours) -> [count, XOR of entry digests]

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_home)

    def __iter__(self) -> Iterator[Binding]:
        return iter(list(self._by_home.values()))

    def in_address_order(self) -> Iterator[Binding]:
        """The entries in the order of their home addresses. The order is taken when the
        first entry is asked for (sorting the integer keys: a few ms for 100,000); an entry
        removed after that is skipped, one changed is given as it is when reached."""
        by_home = self._by_home
        for key in sorted(by_home):
            b = by_home.get(key)
            if b is not None:
                yield b

    def __contains__(self, home_address: object) -> bool:
        return type(home_address) is IPv6Address \
            and address_int(home_address) in self._by_home

    def get(self, home_address: IPv6Address) -> Binding | None:
        if type(home_address) is not IPv6Address:  # nothing else is stored (nor an IPv4
            return None  # address whose integer an IPv6 address could share)
        return self._by_home.get(address_int(home_address))

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
        b = self._by_home.get(address_int(address))
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
        b = self._by_home.get(address_int(home_address)) if existing is False else existing
        if local is not None:
            local = self._share(local)
        if primary is not None:
            primary = self._share(primary)
        lifetime = _shared(self._lifetimes, lifetime)
        flags = _shared(self._flags, flags)
        if primary is None:
            touched = _UNTOUCHED  # only copies are swept by it (Binding)
        if b is None:
            b = Binding(home_address, care_of, flags, sequence, lifetime, expires, prefixes,
                        primary, local, touched)
            self._by_home[address_int(home_address)] = b
            if prefixes:
                self._index(b, prefixes)
            if primary is None:
                self.primary_count += 1
            self._account(primary, bce_digest(home_address, care_of, flags, sequence,
                                              prefixes), 1)
            self._schedule(b)
            return b
        changed = b.sequence != sequence or b.care_of != care_of or b.flags != flags \
            or b.prefixes != prefixes
        if changed or b.primary != primary:
            old = b.digest
            self._account(b.primary, old, -1)
            self._account(primary, bce_digest(home_address, care_of, flags, sequence, prefixes)
                          if changed else old, 1)
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
            before = b.expires
            if self._next_valid and self._next is not None and before <= self._next:
                self._next_valid = False  # it was the earliest
            b.expires = expires
            if int(expires) != int(before):
                self._schedule(b)  # the entry in the old second is stale now
            else:
                self._sorted.discard(int(expires))  # moved within its bucket's order
                if self._next_valid and self._next is not None and expires < self._next:
                    self._next = expires
        return b

    def _share(self, address: IPv6Address) -> IPv6Address:
        """The one object kept for ``address`` (by its integer), or ``address`` itself."""
        addresses = self._addresses
        key = address_int(address)
        same = addresses.get(key)
        if same is not None:
            return same
        if len(addresses) < _SHARED:
            addresses[key] = address
        return address

    def _schedule(self, b: Binding) -> None:
        k = int(b.expires)
        bucket = self._wheel.get(k)
        if bucket is None:
            self._wheel[k] = [b]
            heapq.heappush(self._seconds, k)
        else:
            bucket.append(b)
            self._sorted.discard(k)
        self._items += 1
        if self._next_valid and (self._next is None or b.expires < self._next):
            self._next = b.expires  # only ever lowers the earliest expiry: still exact

    def remove(self, home_address: IPv6Address) -> Binding | None:
        """Remove and return the entry of ``home_address`` (None if there is none)."""
        if type(home_address) is not IPv6Address:
            return None  # nothing else is stored (get)
        b = self._by_home.pop(address_int(home_address), None)
        if b is not None:
            if self._next_valid and self._next is not None and b.expires <= self._next:
                self._next_valid = False
            if b.prefixes:
                self._unindex(b, b.prefixes)
            if b.primary is None:
                self.primary_count -= 1
            self._account(b.primary, b.digest, -1)
        return b

    def next_expiry(self) -> float | None:
        """The earliest expiry time of an entry, or None; when the earliest second holds many
        entries, possibly an earlier time (a stale entry's: ``pop_expired`` then clears it)."""
        if self._next_valid:
            return self._next
        wheel, seconds, by_home = self._wheel, self._seconds, self._by_home
        for _ in range(_SCAN):  # bounded: past that, a stale entry only wakes pop_expired early
            if not seconds:
                self._next, self._next_valid = None, True
                return None
            k = seconds[0]
            bucket = wheel[k]
            if len(bucket) > _SCAN:
                # Sorted latest first: the end holds the earliest (maybe a stale entry's).
                return bucket[-1].expires if k in self._sorted else float(k)
            live = [b for b in bucket if by_home.get(address_int(b.home_address)) is b
                    and int(b.expires) == k]
            if live:
                if len(live) != len(bucket):
                    self._items -= len(bucket) - len(live)
                    wheel[k] = live
                    self._sorted.discard(k)
                self._next = min(b.expires for b in live)
                self._next_valid = True
                return self._next
            self._drop_bucket(k)
        return float(seconds[0]) if seconds else None

    def _drop_bucket(self, k: int) -> None:
        self._items -= len(self._wheel.pop(k))
        self._sorted.discard(k)
        heapq.heappop(self._seconds)  # k is always the earliest second when dropped

    def pop_expired(self, now: float, limit: int | None = None) -> list[Binding]:
        """Remove and return the entries whose lifetime ran out at or before ``now``, looking
        at most ``limit`` wheel entries (the rest stay due: ``next_expiry`` is then already
        past)."""
        wheel, seconds, by_home = self._wheel, self._seconds, self._by_home
        out: list[Binding] = []
        looked = 0
        self._next_valid = False
        while seconds and seconds[0] <= now:
            k = seconds[0]
            bucket = wheel[k]
            if k not in self._sorted:
                # Latest first, so what is due is at the end (once per bucket and second).
                bucket.sort(key=_EXPIRES, reverse=True)
                self._sorted.add(k)
            waiting = False  # an entry of this second is not due yet
            while bucket:
                if limit is not None and looked >= limit:
                    return out  # stale entries count: each call does at most ``limit``
                b = bucket[-1]
                if by_home.get(address_int(b.home_address)) is not b or int(b.expires) != k:
                    bucket.pop()  # stale
                    self._items -= 1
                    looked += 1
                    continue
                if b.expires > now:
                    waiting = True  # sorted: nothing before it in the list is due
                    break
                bucket.pop()
                self._items -= 1
                looked += 1
                self.remove(b.home_address)
                out.append(b)
            if waiting:
                break
            self._drop_bucket(k)
        if self._items > 64 and self._items > 3 * len(by_home):
            self._rebuild()
        return out

    def _rebuild(self) -> None:
        """The wheel again from the live entries (many refreshes left stale ones behind)."""
        self._wheel, self._seconds, self._sorted, self._items = {}, [], set(), 0
        self._next_valid = False
        for b in self._by_home.values():
            self._schedule(b)

    def expiry_entries(self) -> int:
        """Entries in the expiry wheel, stale ones included (they stay within a few times the
        number of bindings: ``pop_expired`` rebuilds the wheel beyond that)."""
        return self._items

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
