"""The one error type of :mod:`haha.security`.

Every refusal to protect or to accept a packet raises :class:`SecurityError` with a ``reason``
from the fixed set :data:`REASONS`, so the caller can count drops by reason. Neither the message
nor the ``repr`` ever holds key material: the only facts an error may carry are the reason, a
short human detail written by this package, the SPI, the sequence number and the peer address.
"""

from enum import StrEnum


class Reason(StrEnum):
    """Why a packet was refused (a :class:`SecurityError`'s ``reason``)."""

    # Inbound ESP (RFC 4303 3.4).
    UNKNOWN_SPI = "unknown-spi"  # no inbound SA with that SPI
    REPLAY = "replay"  # sequence number already received (inside the window)
    TOO_OLD = "too-old"  # sequence number left of the anti-replay window (RFC 4303 3.4.3)
    AUTH_FAILED = "auth-failed"  # ICV check failed (forged, corrupted, wrong key)
    BAD_PADDING = "bad-padding"  # authenticated, but padding or pad length malformed (RFC 4303 2.4)
    TRUNCATED = "truncated"  # shorter than SPI + sequence + IV + 2 octets of trailer + ICV
    WRONG_SOURCE = "wrong-source"  # the SA is bound to another peer than the packet's source
    STALE_EPOCH = "stale-epoch"  # keys of an earlier run of the sender (haha.security.epoch)
    EPOCH_LIMITED = "epoch-limited"  # a new epoch announced beyond the budget of tries
    # Outbound.
    SEQ_EXHAUSTED = "seq-exhausted"  # 2^32-1 already sent: never wraps (RFC 4303 3.3.3)
    NO_SA = "no-sa"  # no outbound SA for that peer
    # Policy and admission (haha.security.policy, haha.security.ratelimit).
    UNPROTECTED = "unprotected"  # a message that must arrive in ESP did not
    UNKNOWN_SOURCE = "unknown-source"  # not from a configured, authorised peer (draft 5.2, 5.4)
    #: protected, but by the SA of a peer whose role may not send this message
    WRONG_PEER = "wrong-peer"
    RATE_LIMITED = "rate-limited"  # the source has used up its signalling budget


UNKNOWN_SPI = Reason.UNKNOWN_SPI
REPLAY = Reason.REPLAY
TOO_OLD = Reason.TOO_OLD
AUTH_FAILED = Reason.AUTH_FAILED
BAD_PADDING = Reason.BAD_PADDING
TRUNCATED = Reason.TRUNCATED
WRONG_SOURCE = Reason.WRONG_SOURCE
STALE_EPOCH = Reason.STALE_EPOCH
EPOCH_LIMITED = Reason.EPOCH_LIMITED
SEQ_EXHAUSTED = Reason.SEQ_EXHAUSTED
NO_SA = Reason.NO_SA
UNPROTECTED = Reason.UNPROTECTED
UNKNOWN_SOURCE = Reason.UNKNOWN_SOURCE
WRONG_PEER = Reason.WRONG_PEER
RATE_LIMITED = Reason.RATE_LIMITED

REASONS = tuple(Reason)
_REASON_SET = frozenset(REASONS)


class SecurityError(Exception):
    """A packet that must be dropped, or an SA that must not be used.

    ``reason`` is a member of :data:`REASONS`; ``detail`` a short sentence; ``spi``, ``seq`` and
    ``peer`` are given when known. Key material is never an argument, so it can never appear in
    ``str()`` or ``repr()``.
    """

    __slots__ = ("reason", "detail", "spi", "seq", "peer")

    def __init__(self, reason: str, detail: str = "", *, spi: int | None = None,
                 seq: int | None = None, peer: object = None) -> None:
        if reason not in _REASON_SET:
            raise AssertionError(f"unknown SecurityError reason {reason!r}")
        self.reason = reason
        self.detail = detail
        self.spi = spi
        self.seq = seq
        self.peer = peer
        super().__init__(reason)

    def __str__(self) -> str:
        parts = [self.reason]
        if self.detail:
            parts.append(f": {self.detail}")
        facts = []
        if self.spi is not None:
            facts.append(f"spi=0x{self.spi:08x}")
        if self.seq is not None:
            facts.append(f"seq={self.seq}")
        if self.peer is not None:
            facts.append(f"peer={self.peer}")
        if facts:
            parts.append(f" ({', '.join(facts)})")
        return "".join(parts)

    def __repr__(self) -> str:
        return f"SecurityError({str(self)!r})"


class KeyFileError(ValueError):
    """A key file that must not be used: unsafe permissions, unreadable, or malformed.

    The message names the file and what is wrong with it (mode, length), never its contents.
    """


class SecurityConfigError(ValueError):
    """A security configuration that cannot be used (duplicate SPI, bad key length, lab mode
    without its flag, ...). The message names the SA by peer, direction and SPI, never its key."""
