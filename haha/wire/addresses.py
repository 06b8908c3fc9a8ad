"""Reading and writing IPv6 addresses in the codec.

:func:`address_at` and :func:`address_int` are the codec's two address conversions. Their
implementations live in the codec's private shortcut module (the public ``IPv6Address(int)``
and ``int(address)`` when the shortcuts are off or do not apply to this Python); callers
elsewhere in haha use these names, never the private one.
"""

import socket
from ipaddress import IPv6Address, IPv6Network

from . import _fast

#: ``address_at(data, off)``: the address in ``data[off:off + 16]`` (the caller has checked the
#: length).
address_at = _fast.address_at
#: ``address_int(address)``: the 128-bit integer of an IPv6Address.
address_int = _fast.address_int


_ZERO80 = bytes(10)
_ntop = getattr(socket, "inet_ntop", None)


def _ntop_agrees() -> bool:
    """Whether the C library's ``inet_ntop`` writes addresses as ``str(IPv6Address)`` does
    (RFC 5952: lowercase, no leading zeros, the first longest run of two or more zero groups
    as ``::``), checked once on addresses where implementations could differ."""
    if _ntop is None:
        return False
    for text in ("2001:db8::1", "2001:db8:0:1::", "2001:0:0:1::1", "1::1:0:0:1",
                 "2001:db8:0:0:1:0:0:1", "fe80::1:2:3:4", "2001:db8:1:2:3:4:5:6",
                 "0:1::", "1:0:1:0:1:0:1:0", "ffff::", "2001:db8::ffff:0:1"):
        a = IPv6Address(text)
        if _ntop(socket.AF_INET6, a.packed) != str(a):
            return False
    return True


_NTOP = _ntop_agrees()


def address_text(address: IPv6Address) -> str:
    """``str(address)`` of an IPv6Address, computed by the C library when it writes the same
    text (about a tenth of the cost). Addresses whose first 80 bits are zero (IPv4-compatible
    and -mapped forms, which C libraries write with a dotted quad) and scoped ones take
    ``str``."""
    if _NTOP and type(address) is IPv6Address and not address.scope_id:
        data = address_int(address).to_bytes(16, "big")
        if data[:10] != _ZERO80:
            return _ntop(socket.AF_INET6, data)  # type: ignore[misc]  # _NTOP: not None
    return str(address)


def packed(address: IPv6Address) -> bytes:
    """The 16 octets of ``address``; a TypeError (turned into WireError by the encoders) for
    anything that is not an IPv6Address, so an IPv4 address cannot slip into a 16-octet field."""
    if type(address) is not IPv6Address:
        raise TypeError(f"{address!r} is not an IPv6Address")
    return address_int(address).to_bytes(16, "big")


def network_parts(network: IPv6Network) -> tuple[int, bytes]:
    """``(prefix length, 16 octets)`` of an IPv6Network, TypeError for anything else."""
    if type(network) is not IPv6Network:
        raise TypeError(f"{network!r} is not an IPv6Network")
    return network.prefixlen, address_int(network.network_address).to_bytes(16, "big")
