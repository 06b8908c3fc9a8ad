"""ICMPv6 Parameter Problem answers to packets RFC 8200 says to report, sans-IO.

:func:`haha.wire.ipv6.parse_packet` raises :class:`~haha.wire.ipv6.ParameterProblem` for a
packet to discard: an unrecognised option whose action bits ask for a report (RFC 8200 4.2),
a Hop-by-Hop header that is not first (4.1), a routing header it cannot process (4.4).
:func:`parameter_problem` decides whether that packet may be answered, following RFC 4443 2.4:

- never for action 01 (discard silently);
- never when the invoking packet came from a multicast or the unspecified address (e.4), or
  carries an ICMPv6 error message itself (e.1, as far as its header chain can be walked);
- to a multicast destination only for an unrecognised option with action 10 (e.3); the answer
  then leaves from a unicast address of this node, as it does for a packet sent to an anycast
  address (2.2);
- and only while the :class:`GlobalBudget` has a token (f): one bucket for every answer,
  whatever the source, so a flood of spoofed sources cannot turn this node into a reflector.

The answer carries as much of the invoking packet as fits in the minimum MTU.
"""

from collections.abc import Callable
from ipaddress import IPv6Address

from .wire.icmpv6 import INVOKING_MAX, ParameterProblem
from .wire.ipv6 import ParameterProblem as ParameterProblemError
from .wire.numbers import (
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
)

#: Default budget for Parameter Problem answers: this many per second, at most this many at once.
DEFAULT_RATE = 10.0
DEFAULT_BURST = 10


class GlobalBudget:
    """One token bucket for all answers of a kind (RFC 4443 2.4 (f)); ``now`` is passed in.

    ``allow(now)`` spends a token or returns False; ``refused`` counts the refusals.
    """

    def __init__(self, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"rate {rate!r} must be a positive number")
        if isinstance(burst, bool) or not isinstance(burst, (int, float)) or not burst >= 1:
            raise ValueError(f"burst {burst!r} must be at least 1")
        self.rate = rate
        self.burst = burst
        self.tokens: float = burst
        self.stamp: float | None = None
        self.refused = 0

    def allow(self, now: float) -> bool:
        """Spend a token at ``now`` (True), or count a refusal (False)."""
        if self.stamp is None:
            self.stamp = now
        elif now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False


def _carries_icmp_error(data: bytes) -> bool:
    """Whether the header chain of ``data`` (walked by lengths only) ends in an ICMPv6 error
    message (types 0-127, RFC 4443 2.1). Unwalkable chains count as not."""
    end = min(len(data), 40 + int.from_bytes(data[4:6], "big"))
    nh, pos = data[6], 40
    while nh in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT):
        if pos + 8 > end:
            return False
        if nh == IPPROTO_FRAGMENT:
            if int.from_bytes(data[pos + 2:pos + 4], "big") & 0xFFF8:
                return False  # not the first fragment: no upper-layer header here
            nh, pos = data[pos], pos + 8
        else:
            nh, pos = data[pos], pos + ((data[pos + 1] + 1) << 3)
    return nh == IPPROTO_ICMPV6 and pos < end and data[pos] < 128


def parameter_problem(
        data: bytes, error: ParameterProblemError,
        source_for: Callable[[IPv6Address], IPv6Address | None],
) -> tuple[tuple[IPv6Address, IPv6Address, ParameterProblem], None] | tuple[None, str]:
    """The answer to invoking packet ``data`` that raised ``error`` (a ParameterProblem):
    ``((src, dst, message), None)``, or ``(None, why)`` when RFC 4443 2.4 forbids one.

    ``source_for(destination)`` gives the unicast address to answer from for a packet sent to
    ``destination`` that is multicast or anycast (None: this node has none).
    """
    if error.report == "never":
        return None, "silent"
    src = data[8:24]
    if src[0] == 0xFF or src == bytes(16):
        return None, "bad-source"
    dst = IPv6Address(bytes(data[24:40]))
    if dst.is_multicast and error.report != "always":
        return None, "multicast-destination"
    if _carries_icmp_error(data):
        return None, "icmp-error"
    own = source_for(dst)
    if own is None:
        return None, "no-source"
    message = ParameterProblem(error.code, error.pointer, bytes(data[:INVOKING_MAX]))
    return (own, IPv6Address(bytes(src)), message), None


__all__ = ["GlobalBudget", "parameter_problem", "DEFAULT_RATE", "DEFAULT_BURST"]
