"""The Internet checksum (RFC 1071) over an IPv6 pseudo-header (RFC 8200 8.1).

Because 2**16 is congruent to 1 modulo 0xFFFF, the ones' complement sum of a buffer's 16-bit
words equals the buffer read as one big integer modulo 0xFFFF (with 0 standing for 0xFFFF), and
the sum over a concatenation of even-length parts is the sum of the parts. So the pseudo-header
(source 128, destination 128, upper-layer length 32, zero 24, next header 8) contributes
``src + dst + length + next_header`` read as integers, the data ``int.from_bytes(data)`` (shifted
one octet left when its length is odd, which is the zero pad octet), and one modulo replaces a
Python loop over the words.

``checksum``/``verify`` take the addresses as 16 packed octets, ``checksum_ip``/``verify_ip`` as
:class:`ipaddress.IPv6Address`. For the Mobility Header and ICMPv6 the source is the home
address when a Home Address option is present and the destination the type 2 routing header's
address when one is present (RFC 6275 6.1.1, 6.3, 6.4).
"""

from ipaddress import IPv6Address

from .addresses import address_int

_from_bytes = int.from_bytes


def _sum(s: int, d: int, next_header: int, data: bytes) -> int:
    n = len(data)
    v = _from_bytes(data, "big")
    if n & 1:
        v <<= 8
    return (s + d + n + next_header + v) % 0xFFFF


def checksum(src: bytes, dst: bytes, next_header: int, data: bytes) -> int:
    """The checksum to put in a header whose checksum field in ``data`` is zero.

    ``src`` and ``dst`` are the 16-octet packed pseudo-header addresses.
    """
    rest = _sum(_from_bytes(src, "big"), _from_bytes(dst, "big"), next_header, data)
    # rest == 0 means the folded sum is 0xFFFF: its complement, the checksum, is 0.
    return 0xFFFF - rest if rest else 0


def verify(src: bytes, dst: bytes, next_header: int, data: bytes) -> bool:
    """True when ``data`` (checksum field included) sums to 0xFFFF with its pseudo-header."""
    return not _sum(_from_bytes(src, "big"), _from_bytes(dst, "big"), next_header, data)


def checksum_ip(src: IPv6Address, dst: IPv6Address, next_header: int, data: bytes) -> int:
    """:func:`checksum` with the addresses as :class:`ipaddress.IPv6Address`."""
    rest = _sum(address_int(src), address_int(dst), next_header, data)
    return 0xFFFF - rest if rest else 0


def verify_ip(src: IPv6Address, dst: IPv6Address, next_header: int, data: bytes) -> bool:
    """:func:`verify` with the addresses as :class:`ipaddress.IPv6Address`."""
    # _sum written out: this runs for every packet received.
    n = len(data)
    v = _from_bytes(data, "big")
    if n & 1:
        v <<= 8
    return not (address_int(src) + address_int(dst) + n + next_header + v) % 0xFFFF


def checksum_ip_parts(src: IPv6Address, dst: IPv6Address, next_header: int, length: int,
                      *parts: bytes) -> int:
    """:func:`checksum_ip` of the concatenation of ``parts`` (``length`` octets in all, the
    checksum field zero), each part but the last of even length so that it starts every next
    part on a 16-bit word."""
    v = 0
    for part in parts:
        v += _from_bytes(part, "big")
    if length & 1:
        # the last part is odd and padded with a zero octet: its value x becomes x << 8
        v += 255 * _from_bytes(parts[-1], "big")
    rest = (address_int(src) + address_int(dst) + length + next_header + v) % 0xFFFF
    return 0xFFFF - rest if rest else 0

