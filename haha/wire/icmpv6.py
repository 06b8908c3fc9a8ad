"""ICMPv6 messages of Mobile IPv6 and NEMO (RFC 4443, RFC 4861, RFC 6275 6.5-6.8 and 7, RFC 3963).

- Home Agent Address Discovery Request/Reply (types 144/145), with NEMO's R flag (RFC 3963 7).
- Mobile Prefix Solicitation/Advertisement (146/147).
- Router Advertisement (134) with the H flag and the Home Agent Information option (RFC 6275 7.4),
  Prefix Information with the R flag (7.2), Advertisement Interval (7.3).
- Neighbour Solicitation/Advertisement (135/136) for proxy Neighbour Discovery.
- Parameter Problem (4, RFC 4443 3.4), sent for packets RFC 8200 4 says to report.

``encode_icmpv6(message, src, dst)`` computes the checksum over the pseudo-header;
``decode_icmpv6(data, src, dst)`` checks it. Unknown ICMPv6 types decode to
:class:`UnknownIcmp`, unknown ND options to :class:`UnknownNdOption`.
"""

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Union

from . import checksum as _ck
from .addresses import address_at, packed
from .errors import BAD_CHECKSUM, BAD_LENGTH, BAD_VALUE, TRUNCATED, WireError
from .numbers import (
    ICMP6_DHAAD_REPLY,
    ICMP6_DHAAD_REQUEST,
    ICMP6_MPA,
    ICMP6_MPS,
    ICMP6_NEIGHBOR_ADVERT,
    ICMP6_NEIGHBOR_SOLICIT,
    ICMP6_PARAM_PROB,
    ICMP6_ROUTER_ADVERT,
    IPPROTO_ICMPV6,
    ND_OPT_ADV_INTERVAL,
    ND_OPT_HOME_AGENT_INFO,
    ND_OPT_MTU,
    ND_OPT_PREFIX_INFO,
    ND_OPT_SOURCE_LLADDR,
    ND_OPT_TARGET_LLADDR,
)
from ._fast import maker

DHAAD_R = 0x8000  # NEMO Mobile Router flag in the DHAAD Reserved field (RFC 3963 7.1, 7.2)

RA_M = 0x80  # Managed address configuration
RA_O = 0x40  # Other configuration
RA_H = 0x20  # Home Agent (RFC 6275 7.1)

PI_L = 0x80  # on-link
PI_A = 0x40  # autonomous
PI_R = 0x20  # router address (RFC 6275 7.2)

MPA_M = 0x8000
MPA_O = 0x4000

NA_R = 0x80000000
NA_S = 0x40000000
NA_O = 0x20000000

_HDR = struct.Struct("!BBH")
_HH = struct.Struct("!HH")
_RA = struct.Struct("!BBHII")
_HAINFO = struct.Struct("!HHH")
_PI = struct.Struct("!BBIII")
_I = struct.Struct("!I")


def _prefix_packed(prefix: IPv6Address, length: int) -> bytes:
    if not 0 <= length <= 128:
        raise ValueError(f"prefix length {length} is not 0-128")
    return packed(prefix)


# --- Neighbour Discovery options -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HomeAgentInformation:
    """RFC 6275 7.4: Reserved 16 | Home Agent Preference 16 (unsigned, higher is more preferable) |
    Home Agent Lifetime 16 (s)."""

    preference: int = 0
    lifetime: int = 1800

    def encode(self) -> bytes:
        return bytes((ND_OPT_HOME_AGENT_INFO, 1)) + _HAINFO.pack(0, self.preference, self.lifetime)


@dataclass(frozen=True, slots=True)
class PrefixInformation:
    """RFC 4861 4.6.2 with RFC 6275 7.2's R flag: with R, ``prefix`` carries the router's full
    address (its prefix length still says the prefix)."""

    prefix: IPv6Address
    prefix_length: int
    flags: int = PI_L | PI_A
    valid_lifetime: int = 2592000
    preferred_lifetime: int = 604800

    def encode(self) -> bytes:
        return (
            bytes((ND_OPT_PREFIX_INFO, 4))
            + _PI.pack(self.prefix_length, self.flags, self.valid_lifetime,
                       self.preferred_lifetime, 0)
            + _prefix_packed(self.prefix, self.prefix_length)
        )

    @property
    def network(self) -> IPv6Network:
        return IPv6Network((self.prefix.packed, self.prefix_length), strict=False)


@dataclass(frozen=True, slots=True)
class AdvertisementInterval:
    """RFC 6275 7.3: Reserved 16 | Advertisement Interval 32 (ms)."""

    interval_ms: int

    def encode(self) -> bytes:
        return bytes((ND_OPT_ADV_INTERVAL, 1, 0, 0)) + _I.pack(self.interval_ms)


@dataclass(frozen=True, slots=True)
class Mtu:
    """RFC 4861 4.6.4."""

    mtu: int

    def encode(self) -> bytes:
        return bytes((ND_OPT_MTU, 1, 0, 0)) + _I.pack(self.mtu)


@dataclass(frozen=True, slots=True)
class LinkLayerAddress:
    """RFC 4861 4.6.1, source (1) or target (2) link-layer address."""

    type: int
    address: bytes

    def encode(self) -> bytes:
        body = bytes(self.address)
        if len(body) != 6:
            raise ValueError(f"link-layer address of {len(body)} octets: this codec knows 6")
        n = (len(body) + 2 + 7) // 8
        return bytes((self.type, n)) + body + bytes(n * 8 - 2 - len(body))


@dataclass(frozen=True, slots=True)
class UnknownNdOption:
    """An ND option kept verbatim (``data`` excludes type and length; its length is 8n-2)."""

    type: int
    data: bytes

    def encode(self) -> bytes:
        body = bytes(self.data)
        if (len(body) + 2) % 8:
            raise WireError(BAD_LENGTH, "ND option data must make the option a multiple of 8")
        return bytes((self.type, (len(body) + 2) // 8)) + body


#: Any Neighbour Discovery option this module encodes or decodes.
NdOption = Union[HomeAgentInformation, PrefixInformation, AdvertisementInterval, Mtu,
                 LinkLayerAddress, UnknownNdOption]


def _encode_nd(options: "tuple[NdOption, ...]") -> bytes:
    try:
        return b"".join(o.encode() for o in options)
    except WireError:
        raise
    except (struct.error, AttributeError, TypeError, ValueError) as e:
        raise WireError(BAD_VALUE, f"cannot encode ND option: {e}") from None


def _decode_nd(data: bytes, pos: int) -> "tuple[NdOption, ...]":
    opts: list[NdOption] = []
    end = len(data)
    while pos < end:
        if pos + 2 > end:
            raise WireError(TRUNCATED, "ND option without its length")
        t, n = data[pos], data[pos + 1]
        if n == 0:
            raise WireError(BAD_LENGTH, f"ND option type {t} with length 0")
        nxt = pos + 8 * n
        if nxt > end:
            raise WireError(TRUNCATED, f"ND option type {t} overruns the message")
        b = pos + 2
        if t == ND_OPT_HOME_AGENT_INFO:
            if n != 1:
                raise WireError(BAD_LENGTH, f"Home Agent Information option length {n}, not 1")
            _, pref, life = _HAINFO.unpack_from(data, b)
            opts.append(HomeAgentInformation(pref, life))
        elif t == ND_OPT_PREFIX_INFO:
            if n != 4:
                raise WireError(BAD_LENGTH, f"Prefix Information option length {n}, not 4")
            plen, flags, valid, pref, _ = _PI.unpack_from(data, b)
            if plen > 128:
                raise WireError(BAD_VALUE, f"prefix length {plen} > 128")
            opts.append(PrefixInformation(address_at(data, b + 14), plen, flags,
                                          valid, pref))
        elif t == ND_OPT_ADV_INTERVAL and n == 1:
            opts.append(AdvertisementInterval(_I.unpack_from(data, b + 2)[0]))
        elif t == ND_OPT_MTU and n == 1:
            opts.append(Mtu(_I.unpack_from(data, b + 2)[0]))
        elif t in (ND_OPT_SOURCE_LLADDR, ND_OPT_TARGET_LLADDR) and n == 1:
            opts.append(LinkLayerAddress(t, bytes(data[b : b + 6])))
        else:
            opts.append(UnknownNdOption(t, bytes(data[b:nxt])))
        pos = nxt
    return tuple(opts)


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DhaadRequest:
    """RFC 6275 6.5 / RFC 3963 7.1: Identifier 16 | R + Reserved 16."""

    identifier: int
    mobile_router: bool = False

    TYPE = ICMP6_DHAAD_REQUEST

    def body(self) -> bytes:
        return _HH.pack(self.identifier, DHAAD_R if self.mobile_router else 0)


@dataclass(frozen=True, slots=True)
class DhaadReply:
    """RFC 6275 6.6 / RFC 3963 7.2: Identifier 16 | R + Reserved 16 | Home Agent Addresses."""

    identifier: int
    addresses: tuple[IPv6Address, ...] = ()
    mobile_router: bool = False

    TYPE = ICMP6_DHAAD_REPLY

    def body(self) -> bytes:
        return _HH.pack(self.identifier, DHAAD_R if self.mobile_router else 0) + b"".join(
            packed(a) for a in self.addresses
        )


@dataclass(frozen=True, slots=True)
class MobilePrefixSolicitation:
    """RFC 6275 6.7: Identifier 16 | Reserved 16."""

    identifier: int

    TYPE = ICMP6_MPS

    def body(self) -> bytes:
        return _HH.pack(self.identifier, 0)


@dataclass(frozen=True, slots=True)
class MobilePrefixAdvertisement:
    """RFC 6275 6.8: Identifier 16 | M | O | Reserved 14 | options (Prefix Information)."""

    identifier: int
    flags: int = 0
    options: "tuple[NdOption, ...]" = ()

    TYPE = ICMP6_MPA

    def body(self) -> bytes:
        return _HH.pack(self.identifier, self.flags) + _encode_nd(self.options)


@dataclass(frozen=True, slots=True)
class RouterAdvertisement:
    """RFC 4861 4.2 with RFC 6275 7.1's H flag: Cur Hop Limit 8 | M O H flags 8 |
    Router Lifetime 16 | Reachable Time 32 | Retrans Timer 32 | options."""

    cur_hop_limit: int = 64
    flags: int = RA_H
    router_lifetime: int = 1800
    reachable_time: int = 0
    retrans_timer: int = 0
    options: "tuple[NdOption, ...]" = ()

    TYPE = ICMP6_ROUTER_ADVERT

    def body(self) -> bytes:
        return _RA.pack(self.cur_hop_limit, self.flags, self.router_lifetime, self.reachable_time,
                        self.retrans_timer) + _encode_nd(self.options)

    @property
    def home_agent_information(self) -> "HomeAgentInformation | None":
        for o in self.options:
            if type(o) is HomeAgentInformation:
                return o
        return None


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    """RFC 4861 4.3: Reserved 32 | Target Address 128 | options."""

    target: IPv6Address
    options: "tuple[NdOption, ...]" = ()

    TYPE = ICMP6_NEIGHBOR_SOLICIT

    def body(self) -> bytes:
        return bytes(4) + packed(self.target) + _encode_nd(self.options)


@dataclass(frozen=True, slots=True)
class NeighborAdvertisement:
    """RFC 4861 4.4: R S O flags + Reserved 32 | Target Address 128 | options."""

    target: IPv6Address
    flags: int = NA_O
    options: "tuple[NdOption, ...]" = ()

    TYPE = ICMP6_NEIGHBOR_ADVERT

    def body(self) -> bytes:
        return _I.pack(self.flags) + packed(self.target) + _encode_nd(self.options)


#: An ICMPv6 error carries as much of the invoking packet as fits in the minimum MTU
#: (RFC 4443 2.4 (c)): 1280 - 40 (IPv6 header) - 8 (ICMPv6 header and pointer).
INVOKING_MAX = 1232


@dataclass(frozen=True, slots=True)
class ParameterProblem:
    """RFC 4443 3.4: Pointer 32 | as much of the invoking packet as fits the minimum MTU.
    ``code`` 0 erroneous header field, 1 unrecognised Next Header, 2 unrecognised option;
    ``pointer`` is the offset of the offending octet in the invoking packet."""

    code: int
    pointer: int
    invoking: bytes = b""

    TYPE = ICMP6_PARAM_PROB

    def body(self) -> bytes:
        if not 0 <= self.code <= 0xFF:
            raise ValueError(f"code {self.code} is not 0-255")
        return _I.pack(self.pointer) + bytes(self.invoking[:INVOKING_MAX])


@dataclass(frozen=True, slots=True)
class UnknownIcmp:
    """Any other ICMPv6 message, kept verbatim (``data`` follows the checksum)."""

    type: int
    code: int = 0
    data: bytes = b""

    def body(self) -> bytes:
        if self.type in _MIN_LENGTH:
            raise ValueError(f"ICMPv6 type {self.type} has its own class")
        return bytes(self.data)


#: Any ICMPv6 message this module encodes or decodes.
IcmpMessage = Union[DhaadRequest, DhaadReply, MobilePrefixSolicitation, MobilePrefixAdvertisement,
                    RouterAdvertisement, NeighborSolicitation, NeighborAdvertisement,
                    ParameterProblem, UnknownIcmp]

_MK_DHAAD_REQ = maker(DhaadRequest)
_MK_DHAAD_REP = maker(DhaadReply)


def encode_icmpv6(message: "IcmpMessage", src: IPv6Address, dst: IPv6Address) -> bytes:
    """The bytes of ``message`` with its checksum for pseudo-header ``src``/``dst``."""
    try:
        t = message.type if isinstance(message, UnknownIcmp) else message.TYPE
        code = getattr(message, "code", 0)
        body = message.body()
    except (struct.error, AttributeError, TypeError, ValueError) as e:
        if isinstance(e, WireError):
            raise
        raise WireError(BAD_VALUE, f"cannot encode {type(message).__name__}: {e}") from None
    head = bytes((t, code))
    try:
        c = _ck.checksum_ip(src, dst, IPPROTO_ICMPV6, head + b"\x00\x00" + body)
    except (TypeError, ValueError) as e:
        raise WireError(BAD_VALUE, f"pseudo-header addresses: {e}") from None
    return head + c.to_bytes(2, "big") + body


def _addresses(data: bytes, pos: int) -> tuple[IPv6Address, ...]:
    if (len(data) - pos) % 16:
        raise WireError(BAD_LENGTH, "address list is not a multiple of 16 octets")
    return tuple(address_at(data, i) for i in range(pos, len(data), 16))


#: Minimum length of each message this module interprets (RFC 6275 6.5-6.8, RFC 4861 4.2-4.4).
_MIN_LENGTH = {
    ICMP6_DHAAD_REQUEST: 8,
    ICMP6_DHAAD_REPLY: 8,
    ICMP6_MPS: 8,
    ICMP6_MPA: 8,
    ICMP6_ROUTER_ADVERT: 16,
    ICMP6_NEIGHBOR_SOLICIT: 24,
    ICMP6_NEIGHBOR_ADVERT: 24,
    ICMP6_PARAM_PROB: 8,
}


def decode_icmpv6(data: bytes, src: IPv6Address, dst: IPv6Address,
                  verify_checksum: bool = True) -> "IcmpMessage":
    """Decode one ICMPv6 message (``data`` is exactly the upper-layer payload)."""
    n = len(data)
    if n < 4:
        raise WireError(TRUNCATED, f"ICMPv6 message of {n} octets")
    t, code, cks = _HDR.unpack_from(data)
    if verify_checksum and not _ck.verify_ip(src, dst, IPPROTO_ICMPV6, data):
        raise WireError(BAD_CHECKSUM, f"ICMPv6 checksum 0x{cks:04x} is wrong")
    need = _MIN_LENGTH.get(t)
    if need is None:
        return UnknownIcmp(t, code, bytes(data[4:]))
    if n < need:
        raise WireError(TRUNCATED, f"ICMPv6 type {t} of {n} octets, needs {need}")
    if t == ICMP6_PARAM_PROB:
        return ParameterProblem(code, _I.unpack_from(data, 4)[0], bytes(data[8:]))
    if code != 0:
        raise WireError(BAD_VALUE, f"ICMPv6 type {t} with code {code}")
    if t == ICMP6_DHAAD_REQUEST:
        ident, res = _HH.unpack_from(data, 4)
        if n != 8:
            raise WireError(BAD_LENGTH, f"DHAAD request of {n} octets, not 8")
        return _MK_DHAAD_REQ(ident, bool(res & DHAAD_R))
    if t == ICMP6_DHAAD_REPLY:
        ident, res = _HH.unpack_from(data, 4)
        return _MK_DHAAD_REP(ident, _addresses(data, 8), bool(res & DHAAD_R))
    if t == ICMP6_MPS:
        if n != 8:
            raise WireError(BAD_LENGTH, f"Mobile Prefix Solicitation of {n} octets, not 8")
        return MobilePrefixSolicitation(_HH.unpack_from(data, 4)[0])
    if t == ICMP6_MPA:
        ident, flags = _HH.unpack_from(data, 4)
        return MobilePrefixAdvertisement(ident, flags, _decode_nd(data, 8))
    if t == ICMP6_ROUTER_ADVERT:
        hop, flags, life, reach, retrans = _RA.unpack_from(data, 4)
        return RouterAdvertisement(hop, flags, life, reach, retrans, _decode_nd(data, 16))
    if t == ICMP6_NEIGHBOR_SOLICIT:
        return NeighborSolicitation(address_at(data, 8), _decode_nd(data, 24))
    flags = _I.unpack_from(data, 4)[0]
    return NeighborAdvertisement(address_at(data, 8), flags, _decode_nd(data, 24))
