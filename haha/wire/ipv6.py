"""The IPv6 header chain (RFC 8200) with Mobile IPv6's extension headers (RFC 6275 6.3, 6.4).

``build_packet`` assembles a complete packet: fixed header, an optional type 2 routing header
(the home address of a mobile node reached at its care-of address, RFC 6275 6.4), an optional
Destination Options header with the Home Address option (8n+6, RFC 6275 6.3) and the upper
layer. ``parse_packet`` walks a packet back to its addresses and upper-layer payload, skipping
extension headers it does not interpret by their length.
"""

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from .addresses import address_at, packed
from .errors import BAD_LENGTH, BAD_VALUE, TRUNCATED, UNSUPPORTED, WireError
from .numbers import (
    DSTOPT_HOME_ADDRESS,
    DSTOPT_PAD1,
    DSTOPT_PADN,
    IPPROTO_AH,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ROUTING,
    ROUTING_TYPE_2,
)
from .records import maker

_FIXED = struct.Struct("!IHBB16s16s")
_HEAD = struct.Struct("!IHBB")
#: Destination Options header holding only the Home Address option: next header, length 2
#: (24 octets), PadN of 2 data octets so that the option starts at offset 6 (8n+6).
_HAO_HEAD = bytes((DSTOPT_PADN, 2, 0, 0, DSTOPT_HOME_ADDRESS, 16))
#: Type 2 routing header: length 2, routing type 2, segments left 1, reserved 32.
_RH2_HEAD = bytes((2, ROUTING_TYPE_2, 1, 0, 0, 0, 0))


@dataclass(frozen=True, slots=True)
class Packet:
    """A parsed IPv6 packet.

    ``src``/``dst`` are the fixed header's addresses. ``home_address`` is the Home Address
    option's address (the mobile node's home address; the packet is "from" it), ``routing_address``
    the type 2 routing header's address (the final destination). ``next_header`` and ``payload``
    are the upper layer (ESP, MH, ICMPv6, IPv6-in-IPv6, ...).
    """

    src: IPv6Address
    dst: IPv6Address
    next_header: int
    payload: bytes
    hop_limit: int = 64
    home_address: IPv6Address = None
    routing_address: IPv6Address = None
    traffic_class: int = 0
    flow_label: int = 0

    @property
    def source(self):
        """The address the upper layer sees as source (home address when a HAO is present)."""
        return self.home_address or self.src

    @property
    def destination(self):
        """The final destination (the type 2 routing header's address when present)."""
        return self.routing_address or self.dst


def build_packet(
    src,
    dst,
    next_header,
    payload,
    hop_limit=64,
    home_address=None,
    routing_address=None,
    traffic_class=0,
    flow_label=0,
):
    """A complete IPv6 packet. ``routing_address`` adds a type 2 routing header (``dst`` is then
    the care-of address), ``home_address`` a Destination Options header with the Home Address
    option (``src`` is then the care-of address). Raises :class:`WireError` for values that do
    not fit their fields."""
    try:
        if not 0 <= traffic_class <= 0xFF or not 0 <= flow_label <= 0xFFFFF:
            raise ValueError(f"traffic class {traffic_class} / flow label {flow_label} out of range")
        ext = b""
        nh = next_header
        if home_address is not None:
            ext = bytes((nh, 2)) + _HAO_HEAD + packed(home_address)
            nh = IPPROTO_DSTOPTS
        if routing_address is not None:
            ext = bytes((nh,)) + _RH2_HEAD + packed(routing_address) + ext
            nh = IPPROTO_ROUTING
        body = ext + payload
        if len(body) > 0xFFFF:
            raise WireError(BAD_LENGTH, f"payload of {len(body)} octets needs a jumbogram")
        head = _FIXED.pack(
            0x60000000 | (traffic_class << 20) | flow_label,
            len(body),
            nh,
            hop_limit,
            packed(src),
            packed(dst),
        )
    except WireError:
        raise
    except (struct.error, AttributeError, TypeError, ValueError) as e:
        raise WireError(BAD_VALUE, f"cannot encode IPv6 header: {e}") from None
    return head + body


def _home_address_option(data, start, end):
    """Scan Destination Options ``data[start:end]`` for the Home Address option."""
    pos = start
    found = None
    while pos < end:
        t = data[pos]
        if t == DSTOPT_PAD1:
            pos += 1
            continue
        if pos + 2 > end:
            raise WireError(TRUNCATED, "destination option without its length")
        n = data[pos + 1]
        nxt = pos + 2 + n
        if nxt > end:
            raise WireError(TRUNCATED, "destination option overruns its header")
        if t == DSTOPT_HOME_ADDRESS:
            if n != 16:
                raise WireError(BAD_LENGTH, f"Home Address option length {n}, expected 16")
            if found is not None:
                raise WireError(BAD_VALUE, "two Home Address options")
            found = address_at(data, pos + 2)
        pos = nxt
    return found


_MK_PACKET = maker(Packet)


def parse_packet(data):
    """Parse an IPv6 packet. Raises :class:`WireError` for anything malformed.

    Hop-by-Hop and Destination Options headers are walked (the Home Address option is read);
    a type 2 routing header is read; other routing types are skipped when Segments Left is 0 and
    refused otherwise (RFC 8200 4.4); a fragment header is refused (signalling is never
    fragmented here); anything else is the upper layer. Octets after the Payload Length are
    ignored (Ethernet padding).
    """
    n = len(data)
    if n < 40:
        raise WireError(TRUNCATED, f"IPv6 packet of {n} octets is shorter than its header")
    vtf, plen, nh, hlim = _HEAD.unpack_from(data)
    if vtf >> 28 != 6:
        raise WireError(BAD_VALUE, f"IP version {vtf >> 28}, expected 6")
    end = 40 + plen
    if end > n:
        raise WireError(TRUNCATED, f"Payload Length {plen} but {n - 40} octets follow the header")
    pos = 40
    hao = None
    rh2 = None
    while nh in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT):
        if pos + 8 > end:
            raise WireError(TRUNCATED, f"extension header {nh} at offset {pos} is cut short")
        nxt_nh = data[pos]
        if nh == IPPROTO_FRAGMENT:
            raise WireError(UNSUPPORTED, "fragmented packet")
        size = (data[pos + 1] + 1) << 3
        if pos + size > end:
            raise WireError(TRUNCATED, f"extension header {nh} of {size} octets overruns the packet")
        if nh == IPPROTO_ROUTING:
            rtype, left = data[pos + 2], data[pos + 3]
            if rtype == ROUTING_TYPE_2:
                if size != 24:
                    raise WireError(BAD_LENGTH, f"type 2 routing header of {size} octets, not 24")
                if left != 1:
                    raise WireError(BAD_VALUE, f"type 2 routing header with segments left {left}")
                if rh2 is not None:
                    raise WireError(BAD_VALUE, "two type 2 routing headers")
                rh2 = address_at(data, pos + 8)
            elif left:
                raise WireError(UNSUPPORTED, f"routing header type {rtype} with segments left")
        else:
            a = _home_address_option(data, pos + 2, pos + size)
            if a is not None:
                if nh == IPPROTO_HOPOPTS or hao is not None:
                    raise WireError(BAD_VALUE, "misplaced or repeated Home Address option")
                hao = a
        nh = nxt_nh
        pos += size
    if nh == IPPROTO_AH:
        raise WireError(UNSUPPORTED, "authentication header")
    return _MK_PACKET(
        address_at(data, 8),
        address_at(data, 24),
        nh,
        bytes(data[pos:end]),
        hlim,
        hao,
        rh2,
        (vtf >> 20) & 0xFF,
        vtf & 0xFFFFF,
    )
