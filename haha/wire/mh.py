"""Mobility Header messages (RFC 6275 6.1, RFC 3963, RFC 5142, draft section 4.1).

``encode_mh(message, src, dst, profile)`` and ``decode_mh(data, src, dst, profile)`` convert
between frozen dataclasses and the bytes of a Mobility Header (the upper-layer payload that
follows next header 135). ``src`` and ``dst`` are the addresses of the checksum pseudo-header
(docs/protocol.md section 2): the home address when the packet carries a Home Address option, and the
final destination (the home address of a type 2 routing header) when it carries one.

Header (RFC 6275 6.1.1): Payload Proto 8 (59) | Header Len 8 (8-octet units after the first 8) |
MH Type 8 | Reserved 8 | Checksum 16 | message data. Offsets below count from the MH start.
"""

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Optional, Union

from . import checksum as _ck
from .addresses import address_at, address_int, packed
from .lifetime import seconds
from .errors import BAD_CHECKSUM, BAD_LENGTH, BAD_VALUE, TRUNCATED, WireError
from .numbers import (
    DEFAULT_PROFILE,
    IPPROTO_MH,
    IPPROTO_NONE,
    MH_BA,
    MH_BE,
    MH_BRR,
    MH_BU,
    MH_HAS,
    NumberProfile,
)
from .options import (
    IPADDR_HOME_ADDRESS,
    IPADDR_HOME_AGENT,
    AlternateCareOfAddress,
    BindingRefreshAdvice,
    BceInfo,
    IpAddress,
    MobileNetworkPrefix,
    MobilityOption,
    OptionDecoder,
    decode_entries,
    decode_options,
    decoders_for,
    encode_entries,
    encode_options,
)
from ._fast import maker
from .status import BindingAckStatus, BindingErrorStatus, BindingInfoAckStatus

# Binding Update flags (IANA "Binding Update Flags"; RFC 6275 6.1.7, RFC 3963 4.1, ...).
BU_A = 0x8000  # Acknowledge
BU_H = 0x4000  # Home Registration
BU_L = 0x2000  # Link-Local Address Compatibility
BU_K = 0x1000  # Key Management Mobility Capability
BU_M = 0x0800  # MAP Registration (RFC 5380)
BU_R = 0x0400  # Mobile Router (RFC 3963)
BU_P = 0x0200  # Proxy Registration (RFC 5213)
BU_F = 0x0100  # Forcing UDP encapsulation (RFC 5555)
BU_T = 0x0080  # TLV-header format (RFC 5845)
BU_B = 0x0040  # Bulk Binding Update (RFC 6602)

# Binding Acknowledgement flags (RFC 6275 6.1.8, RFC 3963 4.2, ...).
BA_K = 0x80
BA_R = 0x40
BA_P = 0x20
BA_T = 0x10
BA_B = 0x08

# Status codes: aliases of the members of haha.wire.status, where they are defined.
BA_ACCEPTED = BindingAckStatus.ACCEPTED
BA_ACCEPTED_PREFIX_DISCOVERY = BindingAckStatus.ACCEPTED_PREFIX_DISCOVERY
BA_UNSPECIFIED = BindingAckStatus.UNSPECIFIED
BA_PROHIBITED = BindingAckStatus.PROHIBITED
BA_INSUFFICIENT_RESOURCES = BindingAckStatus.INSUFFICIENT_RESOURCES
BA_HOME_REG_NOT_SUPPORTED = BindingAckStatus.HOME_REG_NOT_SUPPORTED
BA_NOT_HOME_SUBNET = BindingAckStatus.NOT_HOME_SUBNET
BA_NOT_HOME_AGENT = BindingAckStatus.NOT_HOME_AGENT
BA_DAD_FAILED = BindingAckStatus.DAD_FAILED
BA_SEQUENCE_OUT_OF_WINDOW = BindingAckStatus.SEQUENCE_OUT_OF_WINDOW
BA_EXPIRED_HOME_NONCE = BindingAckStatus.EXPIRED_HOME_NONCE
BA_EXPIRED_CARE_OF_NONCE = BindingAckStatus.EXPIRED_CARE_OF_NONCE
BA_EXPIRED_NONCES = BindingAckStatus.EXPIRED_NONCES
BA_REG_TYPE_CHANGE = BindingAckStatus.REG_TYPE_CHANGE
BA_MR_NOT_PERMITTED = BindingAckStatus.MR_NOT_PERMITTED
BA_INVALID_PREFIX = BindingAckStatus.INVALID_PREFIX
BA_PREFIX_NOT_AUTHORIZED = BindingAckStatus.PREFIX_NOT_AUTHORIZED
BA_FORWARDING_SETUP_FAILED = BindingAckStatus.FORWARDING_SETUP_FAILED

BA_STATUS_NAMES = {s.value: s.description for s in BindingAckStatus}

BE_UNKNOWN_HAO_BINDING = BindingErrorStatus.UNKNOWN_HAO_BINDING
BE_UNKNOWN_MH_TYPE = BindingErrorStatus.UNKNOWN_MH_TYPE

BIA_SYNCHRONISED = BindingInfoAckStatus.SYNCHRONISED
BIA_REJECTED = BindingInfoAckStatus.REJECTED
BIA_REJECTED_OLDER = BindingInfoAckStatus.REJECTED_OLDER
BIA_REJECTED_NOT_AUTHORISED = BindingInfoAckStatus.REJECTED_NOT_AUTHORISED

_HDR = struct.Struct("!BBBBH")
_BU = struct.Struct("!HHH")
_BA = struct.Struct("!BBHH")
_BE = struct.Struct("!BB")
_HELLO = struct.Struct("!HHHHBB")
_BIA = struct.Struct("!HHH")
_H = struct.Struct("!H")
_ZERO2 = b"\x00\x00"


def _find(options: tuple[MobilityOption, ...], cls: type) -> Any:
    for o in options:
        if type(o) is cls:
            return o
    return None


@dataclass(frozen=True, slots=True)
class BindingRefreshRequest:
    """RFC 6275 6.1.2: Reserved 16 | options @8."""

    options: tuple[MobilityOption, ...] = ()

    MH_TYPE = MH_BRR
    OPTIONS_AT = 8

    def fixed(self) -> bytes:
        return _ZERO2


@dataclass(frozen=True, slots=True)
class BindingUpdate:
    """RFC 6275 6.1.7 / RFC 3963 4.1: Sequence 16 | flags 16 | Lifetime 16 (4 s units) | options @12.

    With the R flag, Mobile Network Prefix options list the prefixes (explicit mode); none means
    implicit mode.
    """

    sequence: int
    flags: int = BU_A | BU_H
    lifetime: int = 0
    options: tuple[MobilityOption, ...] = ()

    MH_TYPE = MH_BU
    OPTIONS_AT = 12

    def fixed(self) -> bytes:
        return _BU.pack(self.sequence, self.flags, self.lifetime)

    @property
    def lifetime_seconds(self) -> int:
        return seconds(self.lifetime)

    @property
    def alternate_care_of(self) -> Optional[IPv6Address]:
        o = _find(self.options, AlternateCareOfAddress)
        return o.address if o else None

    @property
    def prefixes(self) -> tuple[IPv6Network, ...]:
        return tuple(o.prefix for o in self.options if type(o) is MobileNetworkPrefix)


@dataclass(frozen=True, slots=True)
class BindingAck:
    """RFC 6275 6.1.8 / RFC 3963 4.2: Status 8 | flags 8 | Sequence 16 | Lifetime 16 | options @12."""

    status: int
    sequence: int
    lifetime: int = 0
    flags: int = 0
    options: tuple[MobilityOption, ...] = ()

    MH_TYPE = MH_BA
    OPTIONS_AT = 12

    def fixed(self) -> bytes:
        return _BA.pack(self.status, self.flags, self.sequence, self.lifetime)

    @property
    def accepted(self) -> bool:
        return self.status < 128

    @property
    def lifetime_seconds(self) -> int:
        return seconds(self.lifetime)

    @property
    def refresh_interval(self) -> Optional[int]:
        """Binding Refresh Advice in units of 4 s, or None."""
        o = _find(self.options, BindingRefreshAdvice)
        return o.interval if o else None


@dataclass(frozen=True, slots=True)
class BindingError:
    """RFC 6275 6.1.9: Status 8 | Reserved 8 | Home Address 128 | options @24."""

    status: int
    home_address: IPv6Address
    options: tuple[MobilityOption, ...] = ()

    MH_TYPE = MH_BE
    OPTIONS_AT = 24

    def fixed(self) -> bytes:
        return _BE.pack(self.status, 0) + packed(self.home_address)


@dataclass(frozen=True, slots=True)
class HomeAgentSwitch:
    """RFC 5142 4.1: # of Addresses 8 | Reserved 8 | Home Agent Addresses | options."""

    addresses: tuple[IPv6Address, ...] = ()
    options: tuple[MobilityOption, ...] = ()

    MH_TYPE = MH_HAS

    def fixed(self) -> bytes:
        return bytes((len(self.addresses), 0)) + b"".join(packed(a) for a in self.addresses)


@dataclass(frozen=True, slots=True)
class HaHello:
    """Draft 4.1.1, Home Agent HELLO.

    Sequence 16 | HA Preference 16 (unsigned, as the draft says and as RFC 6275 7.4's Home Agent
    Information option encodes it; higher is more preferable) |
    HA Lifetime 16 (s) | HELLO Interval 16 (s) | Reserved 8 | Prefix Length 8 |
    Home Agent Address 128 | options @32 (MNP options: the prefixes this HA serves).
    """

    sequence: int
    preference: int
    lifetime: int
    interval: int
    prefix_length: int
    home_agent: IPv6Address
    options: tuple[MobilityOption, ...] = ()

    PROFILE_KEY = "hello"
    OPTIONS_AT = 32

    def fixed(self) -> bytes:
        if not 0 <= self.prefix_length <= 128:
            raise ValueError(f"prefix length {self.prefix_length} is not 0-128")
        return (
            _HELLO.pack(
                self.sequence, self.preference, self.lifetime, self.interval, 0, self.prefix_length
            )
            + packed(self.home_agent)
        )

    @property
    def prefixes(self) -> tuple[IPv6Network, ...]:
        return tuple(o.prefix for o in self.options if type(o) is MobileNetworkPrefix)


@dataclass(frozen=True, slots=True)
class BindingInfoRequest:
    """Draft 4.1.2: Identifier 16 | options @8 (one IP Address option, sub-type 4, or one MNP).

    Extension (docs/protocol.md 6.5): the home address ``::`` asks for every binding of the primary.
    """

    identifier: int
    options: tuple[MobilityOption, ...] = ()

    PROFILE_KEY = "bir"
    OPTIONS_AT = 8

    def fixed(self) -> bytes:
        return _H.pack(self.identifier)

    @property
    def home_address(self) -> Optional[IPv6Address]:
        for o in self.options:
            if type(o) is IpAddress and o.subtype == IPADDR_HOME_ADDRESS:
                return o.address
        return None

    @property
    def prefix(self) -> Optional[IPv6Network]:
        o = _find(self.options, MobileNetworkPrefix)
        return o.prefix if o else None


@dataclass(frozen=True, slots=True)
class BindingInfoUpdate:
    """Draft 4.1.3: Identifier 16 | options @8: BCE Information options, each followed by its
    MNP options (``entries``), then any other options."""

    identifier: int
    entries: tuple[BceInfo, ...] = ()
    options: tuple[MobilityOption, ...] = ()

    PROFILE_KEY = "biu"
    OPTIONS_AT = 8

    def fixed(self) -> bytes:
        return _H.pack(self.identifier)


@dataclass(frozen=True, slots=True)
class BindingInfoAck:
    """Draft 4.1.4: Identifier 16 | Status 16 | Reserved 16 | padding to 16 octets | options."""

    identifier: int
    status: int = BIA_SYNCHRONISED
    options: tuple[MobilityOption, ...] = ()

    PROFILE_KEY = "bia"
    OPTIONS_AT = 12

    def fixed(self) -> bytes:
        return _BIA.pack(self.identifier, self.status, 0)


@dataclass(frozen=True, slots=True)
class HaSwitchRequest:
    """Draft 4.1.5: Reserved 16 | options @8 (optionally an IP Address option, sub-type 3, naming
    the desired home agent)."""

    options: tuple[MobilityOption, ...] = ()

    PROFILE_KEY = "hasr"
    OPTIONS_AT = 8

    def fixed(self) -> bytes:
        return _ZERO2

    @property
    def desired_home_agent(self) -> Optional[IPv6Address]:
        for o in self.options:
            if type(o) is IpAddress and o.subtype == IPADDR_HOME_AGENT:
                return o.address
        return None


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A Mobility Header type this codec does not know: answer it with a Binding Error (status 2).

    ``data`` is everything after the 6-octet header, padding included.
    """

    mh_type: int
    data: bytes = b""

    OPTIONS_AT = 6

    def fixed(self) -> bytes:
        return bytes(self.data)


MESSAGE_TYPES = (
    BindingRefreshRequest,
    BindingUpdate,
    BindingAck,
    BindingError,
    HomeAgentSwitch,
    HaHello,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingInfoAck,
    HaSwitchRequest,
)


#: Any Mobility Header message this module encodes or decodes.
MhMessage = Union[BindingRefreshRequest, BindingUpdate, BindingAck, BindingError, HomeAgentSwitch,
                  HaHello, BindingInfoRequest, BindingInfoUpdate, BindingInfoAck, HaSwitchRequest,
                  UnknownMessage]


def mh_type_of(message: "MhMessage", profile: NumberProfile = DEFAULT_PROFILE) -> int:
    """The MH Type number of ``message`` under ``profile``."""
    if type(message) is UnknownMessage:
        return message.mh_type
    cls: Any = type(message)  # the class says its number: MH_TYPE, or PROFILE_KEY of profile
    t = getattr(cls, "MH_TYPE", None)
    if t is None:
        return int(getattr(profile, cls.PROFILE_KEY))
    return int(t)


#: Messages a home agent sends as one object to many nodes (a take-over's switch requests to
#: every node of the dead peer: haha.core.switching keeps the last one made), and the octets
#: of the last one encoded: ``(message, profile, head, tail, their sum)``. Only the
#: checksum depends on the addresses, so the same object is encoded again for the next node
#: as one sum and one concatenation. Keyed by identity, for these classes only: frozen
#: records of immutable values, so an object's octets never change.
_REPEATED = (HaSwitchRequest, HomeAgentSwitch)
_last_encoded: tuple[Any, Any, bytes, bytes, int] = (None, None, b"", b"", 0)


def encode_mh(message: "MhMessage", src: IPv6Address, dst: IPv6Address,
              profile: NumberProfile = DEFAULT_PROFILE) -> bytes:
    """The bytes of ``message`` as a Mobility Header, checksum computed for ``src``/``dst``.

    Raises :class:`WireError` (``bad-value`` or ``bad-length``) for a message that cannot be
    encoded: a field out of range, an option that does not fit, a header over 2048 octets.
    """
    global _last_encoded
    last = _last_encoded
    if last[0] is message and last[1] is profile:
        head, tail, v = last[2], last[3], last[4]
        # The checksum as checksum_ip_parts computes it (the length is a multiple of 8).
        try:
            rest = (address_int(src) + address_int(dst) + len(head) + 2 + len(tail)
                    + IPPROTO_MH + v) % 0xFFFF
        except (AttributeError, TypeError, ValueError) as e:
            raise WireError(BAD_VALUE, f"cannot encode {type(message).__name__}: {e}") from None
        return head + (0xFFFF - rest if rest else 0).to_bytes(2, "big") + tail
    cls = type(message)
    # The profile's tables, read inline (a call per packet costs a few percent of a small one).
    t = profile.codec_tables.get("mh") or _tables(profile)
    known, _, types = t
    mtype = types.get(cls)
    msg: Any = message  # fields read by the class found: the encoder dispatches on it
    try:
        if mtype is None:
            if cls is not UnknownMessage:
                raise TypeError(f"{cls.__name__} is not a Mobility Header message")
            mtype = msg.mh_type
            if mtype in known:
                raise ValueError(f"MH type {mtype} is known under profile {profile.name}: "
                                 "use its class")
            body = bytes(msg.data)
            if len(body) % 8 != 2:
                raise WireError(BAD_LENGTH, "unknown message data must end on an 8-octet boundary")
            opts = b""
        else:
            body = msg.fixed()
            at = 6 + len(body)
            if cls is BindingInfoUpdate:
                opts = encode_entries(msg.entries, msg.options, at, profile)
            else:
                opts = encode_options(msg.options, at, profile)
        total = 6 + len(body) + len(opts)
        if total > 2048:
            raise WireError(BAD_LENGTH, f"Mobility Header of {total} octets exceeds 2048")
        head = bytes((IPPROTO_NONE, (total >> 3) - 1, mtype, 0))
        tail = body + opts
        # head (4 octets), the zero checksum field (2) and tail start at even offsets, so the
        # sum over their concatenation is the sum of their sums: no need to build it.
        c = _ck.checksum_ip_parts(src, dst, IPPROTO_MH, total, head, tail)
    except WireError:
        raise
    except (struct.error, AttributeError, TypeError, ValueError) as e:
        raise WireError(BAD_VALUE, f"cannot encode {cls.__name__}: {e}") from None
    if cls in _REPEATED:
        _last_encoded = (message, profile, head, tail,
                         int.from_bytes(head, "big") + int.from_bytes(tail, "big"))
    return head + c.to_bytes(2, "big") + tail


# --- decoding -------------------------------------------------------------------------------

_BRR = maker(BindingRefreshRequest)
_BU_ = maker(BindingUpdate)
_BA_ = maker(BindingAck)
_BE_ = maker(BindingError)
_HAS = maker(HomeAgentSwitch)
_HELLO_ = maker(HaHello)
_BIR = maker(BindingInfoRequest)
_BIU = maker(BindingInfoUpdate)
_BIA_ = maker(BindingInfoAck)
_HASR = maker(HaSwitchRequest)
_UNKNOWN = maker(UnknownMessage)


def _d_brr(data: bytes, end: int, table: dict[int, OptionDecoder],
           profile: NumberProfile) -> "MhMessage":
    return _BRR(decode_options(data, 8, end, table, profile))


def _d_bu(data: bytes, end: int, table: dict[int, OptionDecoder],
          profile: NumberProfile) -> "MhMessage":
    seq, flags, life = _BU.unpack_from(data, 6)
    return _BU_(seq, flags, life, decode_options(data, 12, end, table, profile))


def _d_ba(data: bytes, end: int, table: dict[int, OptionDecoder],
          profile: NumberProfile) -> "MhMessage":
    status, flags, seq, life = _BA.unpack_from(data, 6)
    return _BA_(status, seq, life, flags, decode_options(data, 12, end, table, profile))


def _d_be(data: bytes, end: int, table: dict[int, OptionDecoder],
          profile: NumberProfile) -> "MhMessage":
    return _BE_(
        data[6], address_at(data, 8), decode_options(data, 24, end, table, profile)
    )


def _d_has(data: bytes, end: int, table: dict[int, OptionDecoder],
           profile: NumberProfile) -> "MhMessage":
    n = data[6]
    at = 8 + 16 * n
    if at > end:
        raise WireError(TRUNCATED, f"Home Agent Switch lists {n} addresses but has room for fewer")
    addrs = tuple(address_at(data, 8 + 16 * i) for i in range(n))
    return _HAS(addrs, decode_options(data, at, end, table, profile))


def _d_hello(data: bytes, end: int, table: dict[int, OptionDecoder],
             profile: NumberProfile) -> "MhMessage":
    seq, pref, life, interval, _, plen = _HELLO.unpack_from(data, 6)
    if plen > 128:
        raise WireError(BAD_VALUE, f"HELLO prefix length {plen} > 128")
    return _HELLO_(
        seq, pref, life, interval, plen, address_at(data, 16),
        decode_options(data, 32, end, table, profile),
    )


def _d_bir(data: bytes, end: int, table: dict[int, OptionDecoder],
           profile: NumberProfile) -> "MhMessage":
    return _BIR(
        _H.unpack_from(data, 6)[0], decode_options(data, 8, end, table, profile)
    )


def _d_biu(data: bytes, end: int, table: dict[int, OptionDecoder],
           profile: NumberProfile) -> "MhMessage":
    entries, others = decode_entries(data, 8, end, table, profile)
    return _BIU(_H.unpack_from(data, 6)[0], entries, others)


def _d_bia(data: bytes, end: int, table: dict[int, OptionDecoder],
           profile: NumberProfile) -> "MhMessage":
    ident, status, _ = _BIA.unpack_from(data, 6)
    return _BIA_(ident, status, decode_options(data, 12, end, table, profile))


def _d_hasr(data: bytes, end: int, table: dict[int, OptionDecoder],
            profile: NumberProfile) -> "MhMessage":
    return _HASR(decode_options(data, 8, end, table, profile))


# Minimum total length of each message (fixed part, rounded up to 8 octets).
_FIXED_DECODE = (
    (MH_BRR, _d_brr, 8),
    (MH_BU, _d_bu, 16),
    (MH_BA, _d_ba, 16),
    (MH_BE, _d_be, 24),
    (MH_HAS, _d_has, 8),
)
_PROFILE_DECODE = (
    ("hello", _d_hello, 32),
    ("bir", _d_bir, 8),
    ("biu", _d_biu, 8),
    ("bia", _d_bia, 16),
    ("hasr", _d_hasr, 8),
)

#: The last switch request decoded (RFC 5142 Home Agent Switch or the draft's HASR):
#: ``(its octets after the checksum, profile, record, the decoder of its type)``
#: (:func:`decode_mh`; the type is not among those octets).
_last_decoded: tuple[bytes, Any, Any, Any] = (b"", None, None, None)

#: A message decoder: ``decode(data, length, option table, profile)``.
_Decoder = Callable[[bytes, int, dict[int, OptionDecoder], NumberProfile], MhMessage]
#: ``(MH type -> (decoder, minimum length), option table, message class -> MH type)``.
_Tables = tuple[dict[int, tuple[_Decoder, int]], dict[int, OptionDecoder], dict[type, int]]


def _tables(profile: NumberProfile) -> "_Tables":
    """``(message table, option table, class -> MH type)`` of ``profile``, built once and kept
    on the profile itself (:attr:`NumberProfile.codec_tables`)."""
    t: Optional[_Tables] = profile.codec_tables.get("mh")
    if t is None:
        msgs: dict[int, tuple[_Decoder, int]] = {n: (f, m) for n, f, m in _FIXED_DECODE}
        for key, f, m in _PROFILE_DECODE:
            msgs[getattr(profile, key)] = (f, m)
        types: dict[type, int] = {mcls: mh_type_of_class(mcls, profile) for mcls in MESSAGE_TYPES}
        t = profile.codec_tables["mh"] = (msgs, decoders_for(profile), types)
    return t


def mh_type_of_class(cls: type, profile: NumberProfile = DEFAULT_PROFILE) -> int:
    """The MH Type number of the messages of class ``cls`` (one of :data:`MESSAGE_TYPES`)."""
    key = getattr(cls, "PROFILE_KEY", None)
    return int(getattr(profile, key) if key else getattr(cls, "MH_TYPE"))


def decode_mh(
    data: bytes, src: IPv6Address, dst: IPv6Address, profile: NumberProfile = DEFAULT_PROFILE,
    verify_checksum: bool = True,
) -> "MhMessage":
    """Decode one Mobility Header (``data`` is exactly the upper-layer payload).

    Raises :class:`WireError` for anything malformed: a payload shorter than Header Len says
    (truncated) or longer (bad-length), a bad checksum, a message shorter than its type's
    minimum, a bad option. An unknown MH type decodes to :class:`UnknownMessage`.
    """
    n = len(data)
    if n < 8:
        raise WireError(TRUNCATED, f"Mobility Header of {n} octets is shorter than 8")
    _proto, hlen, mtype, _res, _ck_field = _HDR.unpack_from(data)
    size = (hlen + 1) << 3
    if size != n:
        if size > n:
            raise WireError(TRUNCATED, f"Header Len says {size} octets, payload has {n}")
        raise WireError(BAD_LENGTH, f"Header Len says {size} octets, payload has {n}")
    if verify_checksum and not _ck.verify_ip(src, dst, IPPROTO_MH, data):
        raise WireError(BAD_CHECKSUM, f"Mobility Header checksum 0x{_ck_field:04x} is wrong")
    msgs, opts, _ = profile.codec_tables.get("mh") or _tables(profile)
    entry = msgs.get(mtype)
    if entry is None:
        return _UNKNOWN(mtype, bytes(data[6:]))
    dec, minimum = entry
    if n < minimum:
        raise WireError(BAD_LENGTH, f"MH type {mtype} needs at least {minimum} octets, has {n}")
    if dec is _d_hasr or dec is _d_has:
        # A take-over's switch requests differ between nodes only in their checksum (checked
        # above): octets equal to the last ones decoded give that same (immutable) record.
        global _last_decoded
        body = bytes(data[6:])
        last = _last_decoded
        if last[3] is dec and last[1] is profile and last[0] == body:
            return last[2]
        message = dec(data, n, opts, profile)
        _last_decoded = (body, profile, message, dec)
        return message
    return dec(data, n, opts, profile)
