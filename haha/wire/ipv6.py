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
from .errors import BAD_LENGTH, BAD_VALUE, TRUNCATED, UNKNOWN, UNSUPPORTED, WireError
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
    home_address: IPv6Address | None = None
    routing_address: IPv6Address | None = None
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


#: Options this parser recognises, per header (RFC 8200 4.2): Pad1, PadN everywhere, Router
#: Alert (RFC 2711) in Hop-by-Hop, the Home Address option (RFC 6275 6.3) and the Tunnel
#: Encapsulation Limit (RFC 2473 5.1) in Destination Options.
_HBH_KNOWN = frozenset((DSTOPT_PAD1, DSTOPT_PADN, 0x05))
_DST_KNOWN = frozenset((DSTOPT_PAD1, DSTOPT_PADN, DSTOPT_HOME_ADDRESS, 0x04))

#: ICMPv6 Parameter Problem codes (RFC 4443 3.4).
PP_ERRONEOUS_FIELD = 0
PP_UNRECOGNISED_NEXT_HEADER = 1
PP_UNRECOGNISED_OPTION = 2


class ParameterProblem(WireError):
    """A packet RFC 8200 says to discard, and perhaps to report with an ICMPv6 Parameter
    Problem (RFC 4443 3.4).

    ``code`` and ``pointer`` (offset in the packet of the offending octet) are the report's
    fields; ``report`` is ``"never"`` (action 01: discard silently), ``"always"`` (action 10:
    even when the destination was multicast) or ``"unicast"`` (action 11, and code 1: only when
    the destination was not multicast). ``counter`` names the drop for the adapter's counters.
    """

    def __init__(self, reason, detail, code, pointer, report, counter):
        super().__init__(reason, detail)
        self.code = code
        self.pointer = pointer
        self.report = report
        self.counter = counter


#: What the two highest-order bits of an unrecognised option's type ask (RFC 8200 4.2).
_ACTIONS = (None, "never", "always", "unicast")


def _options(data, start, end, known):
    """Walk the options of an extension header ``data[start:end]``; return the Home Address
    option's address or None. An option not in ``known`` is skipped or refused as its action
    bits say (RFC 8200 4.2)."""
    pos = start
    found = None
    while pos < end:
        t = data[pos]
        if t == DSTOPT_PAD1:
            pos += 1
            continue
        if pos + 2 > end:
            raise WireError(TRUNCATED, "option without its length")
        n = data[pos + 1]
        nxt = pos + 2 + n
        if nxt > end:
            raise WireError(TRUNCATED, "option overruns its header")
        if t not in known:
            action = _ACTIONS[t >> 6]
            if action is not None:
                raise ParameterProblem(
                    UNKNOWN, f"unrecognised option type 0x{t:02x} at offset {pos}",
                    PP_UNRECOGNISED_OPTION, pos, action, "unrecognised-option")
        elif t == DSTOPT_HOME_ADDRESS:
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
    an option this parser does not know is skipped or refused as the two highest-order bits of
    its type say (RFC 8200 4.2), and a Hop-by-Hop header anywhere but first is refused (4.1):
    both raise :class:`ParameterProblem`, which says whether and how to report it;
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
    nh_at = 6  # offset of the Next Header field naming the header at ``pos``
    while nh in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT):
        if nh == IPPROTO_HOPOPTS and pos != 40:
            # RFC 8200 4.1: Hop-by-Hop only immediately after the IPv6 header; next header 0
            # anywhere else is answered like an unrecognised one (code 1, pointing at it).
            raise ParameterProblem(
                BAD_VALUE, f"Hop-by-Hop Options header at offset {pos}, not first",
                PP_UNRECOGNISED_NEXT_HEADER, nh_at, "unicast", "misplaced-hop-by-hop")
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
                # RFC 8200 4.4: discard, Parameter Problem code 0 at the Routing Type.
                raise ParameterProblem(
                    UNSUPPORTED, f"routing header type {rtype} with segments left",
                    PP_ERRONEOUS_FIELD, pos + 2, "unicast", "routing-header")
        elif nh == IPPROTO_HOPOPTS:
            _options(data, pos + 2, pos + size, _HBH_KNOWN)
        else:
            a = _options(data, pos + 2, pos + size, _DST_KNOWN)
            if a is not None:
                if hao is not None:
                    raise WireError(BAD_VALUE, "repeated Home Address option")
                hao = a
        nh = nxt_nh
        nh_at = pos
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
