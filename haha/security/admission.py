"""Admission of inbound signalling that spoofing cannot starve, and a limit on what it makes
us send.

Rate limiting keyed on the outer source address alone lets anyone who can forge that address
spend its budget: a flood of ESP with random SPIs from a peer's address would drop the peer's
real messages. So admission has two separate budgets:

- **Authenticated**: a packet whose SPI names a known SA is checked first (SPI look-up, then the
  ICV: one AES-GCM operation, no key derivation). If it authenticates, it is charged to the
  bucket of the SA's peer (``authenticated_rate`` per second, ``authenticated_burst``), never
  to the budget of its outer source: nothing an attacker sends without the key can use it up.
- **Unauthenticated**: everything else (unprotected messages, ESP with an unknown SPI, ESP that
  fails to authenticate) goes through the per-source :class:`~haha.security.ratelimit.
  RateLimiter` (with its admission of new sources, ``admit_rate``/``admit_burst``) and then a
  global bucket for all of it together (``unauthenticated_rate``/``unauthenticated_burst``),
  so spoofed sources cannot add up to more than that.

The authenticated buckets are one per SA peer, so one per mobile node as well as per home agent:
kept for good, they would hold about 200 octets per registered node that nobody needs between
its registrations. A bucket untouched for as long as it takes to refill
(``authenticated_burst / authenticated_rate``, 2 s by default) is full, the same as a new one,
so they are kept in two generations: every such period the older generation is forgotten and
the newer becomes the older; a bucket used meanwhile moves back into the newer. What is
forgotten was untouched for at least that period, so every packet is charged exactly as if
every bucket were kept; only the nodes active in the last two periods hold one.

Answers to unauthenticated input (Binding Error, DHAAD reply, any ICMPv6 error) go through one
global bucket (``answer_rate``/``answer_burst``): RFC 6275 9.3.3 asks for Binding Errors to be
rate limited as ICMPv6 errors are, and without it spoofed requests turn the home agent into a
reflector towards the victim whose address they carry.

Time is passed in (``now``); nothing here reads a clock.
"""

from collections.abc import Hashable
from dataclasses import dataclass
from ipaddress import IPv6Address

from zope.interface import implementer

from ..interfaces import ICounterSource, ITieredLimiter
from ..wire.addresses import address_int
from .errors import RATE_LIMITED, SecurityConfigError
from .ratelimit import RateLimiter, _Bucket, _positive, spend

#: Counters kept by :class:`Admission`.
ADMISSION_REASONS = (RATE_LIMITED, "unauthenticated-budget", "authenticated-budget",
                     "answer-budget")


@dataclass(frozen=True)
class AdmissionSettings:
    """The budgets of :class:`Admission` (module docstring); rates per second."""

    source_rate: float = 50.0
    source_burst: int = 100
    max_sources: int = 4096
    admit_rate: float = 409.6
    admit_burst: int = 1024
    unauthenticated_rate: float = 2000.0
    unauthenticated_burst: int = 4000
    authenticated_rate: float = 10000.0
    authenticated_burst: int = 20000
    answer_rate: float = 100.0
    answer_burst: int = 200

    def __post_init__(self) -> None:
        for name in ("source_rate", "source_burst", "admit_rate", "admit_burst",
                     "unauthenticated_rate", "unauthenticated_burst", "authenticated_rate",
                     "authenticated_burst", "answer_rate", "answer_burst"):
            _positive(name.replace("_", "-"), getattr(self, name))
        if isinstance(self.max_sources, bool) or not isinstance(self.max_sources, int) \
                or self.max_sources < 1:
            raise SecurityConfigError(
                f"max_sources = {self.max_sources!r} must be a positive integer")


def _source_key(source: Hashable) -> Hashable:
    """What the per-source buckets are keyed by: an IPv6 address's integer, anything else as
    it is."""
    return address_int(source) if type(source) is IPv6Address else source


@implementer(ICounterSource, ITieredLimiter)
class Admission:
    """The two inbound budgets and the answer budget (module docstring).

    ``counters`` maps ``rate-limited`` (per-source refusals), ``unauthenticated-budget``,
    ``authenticated-budget`` and ``answer-budget`` to the packets each refused.
    """

    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        s = settings if settings is not None else AdmissionSettings()
        self.settings = s
        self.sources = RateLimiter(rate=s.source_rate, burst=s.source_burst,
                                   max_sources=s.max_sources, admit_rate=s.admit_rate,
                                   admit_burst=s.admit_burst)
        self._strangers: _Bucket | None = None
        self._answers: _Bucket | None = None
        # SA peer -> bucket, in two generations (module docstring): used in this period, and
        # used in the one before; forgotten at the end of the period after that.
        self._peers: dict[Hashable, _Bucket] = {}
        self._peers_before: dict[Hashable, _Bucket] = {}
        # A bucket left this long is full again (a margin for rounding): the period.
        self._refill = s.authenticated_burst / s.authenticated_rate * (1 + 1e-9)
        self._next_generation: float | None = None
        self.counters = dict.fromkeys(ADMISSION_REASONS, 0)

    def __len__(self) -> int:
        """How many unauthenticated sources are tracked."""
        return len(self.sources)

    def pin(self, source: Hashable, now: float = 0.0) -> None:
        """Give a configured peer's address its own per-source bucket (lab mode traffic)."""
        self.sources.pin(_source_key(source), now)

    def unpin(self, source: Hashable) -> None:
        """Let ``source`` share the common budgets again."""
        self.sources.unpin(_source_key(source))

    _spend = staticmethod(spend)

    def unauthenticated(self, source: Hashable, now: float) -> bool:
        """Admit one unauthenticated packet from outer source ``source``."""
        # Buckets are keyed by the address's integer: a new source's packet looks its bucket
        # up in two tables and adds it to one, each a Python-level hash of an IPv6Address.
        if not self.sources.allow(_source_key(source), now):
            self.counters[RATE_LIMITED] += 1
            return False
        s = self.settings
        if self._strangers is None:
            self._strangers = _Bucket(s.unauthenticated_burst, now)
        if self._spend(self._strangers, now, s.unauthenticated_rate, s.unauthenticated_burst):
            return True
        self.counters["unauthenticated-budget"] += 1
        return False

    #: What a caller that only knows :class:`RateLimiter` calls: everything unauthenticated.
    allow = unauthenticated

    def authenticated(self, peer: Hashable, now: float) -> bool:
        """Admit one packet that authenticated under the SA of ``peer``."""
        s = self.settings
        # An address is keyed by its integer: hashing an IPv6Address is a Python call, and
        # every authenticated packet passes here.
        key = address_int(peer) if type(peer) is IPv6Address else peer
        if self._next_generation is None or now >= self._next_generation:
            self._turn_generation(now)
        bucket = self._peers.get(key)
        if bucket is None:
            bucket = self._peers_before.pop(key, None)
            if bucket is None:
                bucket = _Bucket(s.authenticated_burst, now)
            self._peers[key] = bucket
        if self._spend(bucket, now, s.authenticated_rate, s.authenticated_burst):
            return True
        self.counters["authenticated-budget"] += 1
        return False

    def _turn_generation(self, now: float) -> None:
        """Forget the older generation of authenticated buckets: each was last used before
        the current period began, at least a refill period ago, so it is full (module
        docstring)."""
        if self._next_generation is not None:
            # Every bucket of the newer generation was last used before _next_generation
            # (a later use would have turned it then): a period later, it is full too.
            quiet = now >= self._next_generation + self._refill
            self._peers_before = {} if quiet else self._peers
            self._peers = {}
        self._next_generation = now + self._refill

    def bucket_of(self, peer: Hashable) -> _Bucket | None:
        """The authenticated bucket kept for SA peer ``peer`` (None: none is kept, which
        charges its next packet as a full bucket would)."""
        key = address_int(peer) if type(peer) is IPv6Address else peer
        return self._peers.get(key) or self._peers_before.get(key)

    def authenticated_buckets(self) -> int:
        """How many authenticated buckets are kept (both generations)."""
        return len(self._peers) + len(self._peers_before)

    def forget(self, peer: Hashable) -> None:
        """Drop the bucket of an SA peer that is gone."""
        key = address_int(peer) if type(peer) is IPv6Address else peer
        self._peers.pop(key, None)
        self._peers_before.pop(key, None)

    def answer(self, now: float) -> bool:
        """May one answer to unauthenticated input be sent now?"""
        s = self.settings
        if self._answers is None:
            self._answers = _Bucket(s.answer_burst, now)
        if self._spend(self._answers, now, s.answer_rate, s.answer_burst):
            return True
        self.counters["answer-budget"] += 1
        return False


__all__ = ["ADMISSION_REASONS", "Admission", "AdmissionSettings"]
