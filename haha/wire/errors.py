"""The one error type of the codec.

Every decoder in :mod:`haha.wire` raises :class:`WireError` for malformed input and nothing else,
whatever the bytes. ``reason`` is one of the ``REASONS`` strings so callers can count drops by
reason; ``detail`` is a human sentence for logs.
"""

TRUNCATED = "truncated"
BAD_LENGTH = "bad-length"
BAD_CHECKSUM = "bad-checksum"
BAD_ALIGNMENT = "bad-alignment"
BAD_VALUE = "bad-value"
UNKNOWN = "unknown"
UNSUPPORTED = "unsupported"

REASONS = frozenset(
    {TRUNCATED, BAD_LENGTH, BAD_CHECKSUM, BAD_ALIGNMENT, BAD_VALUE, UNKNOWN, UNSUPPORTED}
)


class WireError(ValueError):
    """Malformed or unusable bytes. ``reason`` is a member of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise AssertionError(f"unknown WireError reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ProfileError(ValueError):
    """A numbering profile that cannot be used (a number reused or out of range)."""
