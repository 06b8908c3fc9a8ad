"""Per-source rate limiting of inbound signalling, in bounded memory.

Each source address gets a token bucket (``rate`` tokens per second, at most ``burst``): a
packet spends one token or is dropped (``rate-limited``), so one address flooding uses up its own
bucket and nobody else's. Time is passed in (``now``, seconds, from the caller's
``IReactorTime.seconds()``); nothing here reads a clock.

Memory is bounded: at most ``max_sources`` buckets are kept, the least recently used is
forgotten first. A flood of spoofed source addresses would otherwise get a fresh full bucket per
address and push real peers out, so new sources are admitted through one shared bucket
(``admit_rate`` new sources per second, ``admit_burst`` at once): past it, packets from sources
not yet tracked are dropped without creating state, while sources already tracked keep their
own budget. Configured peers (the authorised home agents) can be ``pin``-ned: they always have a
bucket and are never evicted.

The caller checks the limiter on the outer IPv6 source before any cryptography, so a flood
costs a dictionary look-up per packet, not an AES-GCM operation.
"""

from collections import OrderedDict
from collections.abc import Hashable

from zope.interface import implementer

from ..interfaces import ICounterSource
from .errors import RATE_LIMITED, SecurityConfigError

RATELIMIT_REASONS = (RATE_LIMITED,)


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


def spend(bucket: _Bucket, now: float, rate: float, burst: float) -> bool:
    """Refill ``bucket`` at ``rate`` tokens a second up to ``burst`` and take one token; False
    when none is left."""
    elapsed = now - bucket.stamp
    if elapsed > 0:
        tokens = bucket.tokens + elapsed * rate
        bucket.tokens = burst if tokens > burst else tokens
        bucket.stamp = now
    if bucket.tokens >= 1:
        bucket.tokens -= 1
        return True
    return False


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SecurityConfigError(f"rate limit {name} = {value!r} must be a positive number")
    return value


@implementer(ICounterSource)
class RateLimiter:
    """Token buckets per source (module docstring).

    ``allow(source, now)`` returns True when the packet may be processed. ``counters`` maps
    ``rate-limited`` to the number of packets refused.
    """

    def __init__(self, rate: float = 10.0, burst: float = 20, max_sources: int = 4096,
                 admit_rate: float | None = None, admit_burst: float | None = None) -> None:
        self.rate = _positive("rate", rate)
        self.burst = _positive("burst", burst)
        if isinstance(max_sources, bool) or not isinstance(max_sources, int) or max_sources < 1:
            raise SecurityConfigError(f"max_sources = {max_sources!r} must be a positive integer")
        self.max_sources = max_sources
        # By default the whole table may turn over in about ten seconds, no faster.
        self.admit_rate = _positive(
            "admit_rate", admit_rate if admit_rate is not None else max(1.0, max_sources / 10)
        )
        self.admit_burst = _positive(
            "admit_burst", admit_burst if admit_burst is not None else max(1, max_sources // 4)
        )
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._pinned: dict[Hashable, _Bucket] = {}
        self._admit: _Bucket | None = None
        self.counters = dict.fromkeys(RATELIMIT_REASONS, 0)

    def pin(self, source: Hashable, now: float = 0.0) -> None:
        """Keep a bucket for ``source`` for good (a configured peer): never evicted, never
        subject to admission."""
        if source not in self._pinned:
            bucket = self._buckets.pop(source, None)
            self._pinned[source] = bucket if bucket is not None else _Bucket(self.burst, now)

    def unpin(self, source: Hashable) -> None:
        """Let ``source`` be treated like any other again."""
        self._pinned.pop(source, None)

    def __len__(self) -> int:
        """How many sources are tracked (pinned ones included)."""
        return len(self._buckets) + len(self._pinned)

    _spend = staticmethod(spend)

    def allow(self, source: Hashable, now: float) -> bool:
        """Spend one token of ``source`` at time ``now``; False (and counted) when it has none."""
        bucket = self._pinned.get(source)
        if bucket is None:
            bucket = self._buckets.get(source)
            if bucket is None:
                if self._admit is None:
                    self._admit = _Bucket(self.admit_burst, now)
                if not self._spend(self._admit, now, self.admit_rate, self.admit_burst):
                    self.counters[RATE_LIMITED] += 1
                    return False
                bucket = self._buckets[source] = _Bucket(self.burst, now)
                if len(self._buckets) > self.max_sources:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(source)
        if self._spend(bucket, now, self.rate, self.burst):
            return True
        self.counters[RATE_LIMITED] += 1
        return False
