"""The Internet checksum (RFC 1071) over an IPv6 pseudo-header (RFC 8200 8.1).

Because 2**16 is congruent to 1 modulo 0xFFFF, the ones' complement sum of a buffer's 16-bit
words equals the buffer read as one big integer modulo 0xFFFF (with 0 standing for 0xFFFF).
One ``int.from_bytes`` and one modulo replace a Python loop over the words.
"""

_LEN_NH = b"\x00\x00\x00"


def _pseudo(src, dst, length, next_header):
    return src + dst + length.to_bytes(4, "big") + _LEN_NH + bytes((next_header,))


def checksum(src, dst, next_header, data):
    """The checksum to put in a header whose checksum field in ``data`` is zero.

    ``src`` and ``dst`` are the 16-octet packed addresses of the pseudo-header: for the
    Mobility Header and ICMPv6 the home address when a Home Address option is present, and the
    final destination (the type 2 routing header's address) when a routing header is present.
    """
    buf = _pseudo(src, dst, len(data), next_header) + data
    if len(buf) & 1:
        buf += b"\x00"
    rest = int.from_bytes(buf, "big") % 0xFFFF
    # rest == 0 means the folded sum is 0xFFFF (or the data is all zero): checksum 0.
    return 0xFFFF - rest if rest else 0


def verify(src, dst, next_header, data):
    """True when ``data`` (checksum field included) sums to 0xFFFF with its pseudo-header."""
    buf = _pseudo(src, dst, len(data), next_header) + data
    if len(buf) & 1:
        buf += b"\x00"
    return int.from_bytes(buf, "big") % 0xFFFF == 0
