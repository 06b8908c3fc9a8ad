"""Status codes of the Binding Acknowledgement, Binding Error and Binding Information
Acknowledgement, as ``int`` enums.

The members are the definitions; :mod:`haha.wire.mh`'s ``BA_*``, ``BE_*`` and ``BIA_*``
constants are aliases of them. A member is an ``int``: it packs, compares and formats as its
number, so a decoded message (whose status is a plain ``int``, since a peer may send a value
this module does not know) compares equal to it. :meth:`describe` names any value, known or not.
"""

from enum import IntEnum


class _Status(IntEnum):
    """A status with a human-readable description."""

    description: str

    def __new__(cls, value: int, description: str = "") -> "_Status":
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    @property
    def rejected(self) -> bool:
        """Values of 128 and above reject (RFC 6275 6.1.8, draft 4.1.4)."""
        return self.value >= 128

    @classmethod
    def describe(cls, value: int) -> str:
        """The description of ``value``, or ``unknown status N`` for a number not defined."""
        try:
            return cls(value).description
        except ValueError:
            return f"unknown status {value}"


class BindingAckStatus(_Status):
    """Binding Acknowledgement status (RFC 6275 6.1.8; RFC 3963 4.2 for 140-143)."""

    ACCEPTED = 0, "accepted"
    ACCEPTED_PREFIX_DISCOVERY = 1, "accepted, prefix discovery necessary"
    UNSPECIFIED = 128, "reason unspecified"
    PROHIBITED = 129, "administratively prohibited"
    INSUFFICIENT_RESOURCES = 130, "insufficient resources"
    HOME_REG_NOT_SUPPORTED = 131, "home registration not supported"
    NOT_HOME_SUBNET = 132, "not home subnet"
    NOT_HOME_AGENT = 133, "not home agent for this mobile node"
    DAD_FAILED = 134, "duplicate address detection failed"
    SEQUENCE_OUT_OF_WINDOW = 135, "sequence number out of window"
    EXPIRED_HOME_NONCE = 136, "expired home nonce index"
    EXPIRED_CARE_OF_NONCE = 137, "expired care-of nonce index"
    EXPIRED_NONCES = 138, "expired nonces"
    REG_TYPE_CHANGE = 139, "registration type change disallowed"
    MR_NOT_PERMITTED = 140, "mobile router operation not permitted"
    INVALID_PREFIX = 141, "invalid prefix"
    PREFIX_NOT_AUTHORIZED = 142, "not authorized for prefix"
    FORWARDING_SETUP_FAILED = 143, "forwarding setup failed"


class BindingErrorStatus(_Status):
    """Binding Error status (RFC 6275 6.1.9)."""

    UNKNOWN_HAO_BINDING = 1, "unknown binding for Home Address destination option"
    UNKNOWN_MH_TYPE = 2, "unrecognized MH Type value"


class BindingInfoAckStatus(_Status):
    """Binding Information Acknowledgement status (draft 4.1.4; 129 and 130 are haha's
    extensions, docs/protocol.md 6.4)."""

    SYNCHRONISED = 0, "synchronised"
    REJECTED = 128, "rejected"
    REJECTED_OLDER = 129, "rejected: the sender's entry is older than ours"
    REJECTED_NOT_AUTHORISED = 130, "rejected: the entry is outside what the sender may claim"
