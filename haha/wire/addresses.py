"""Reading and writing IPv6 addresses in the codec.

:func:`address_at` and :func:`address_int` are the codec's two address conversions. Their
implementations live in the codec's private shortcut module (the public ``IPv6Address(int)``
and ``int(address)`` when the shortcuts are off or do not apply to this Python); callers
elsewhere in haha use these names, never the private one.
"""

from ipaddress import IPv6Address, IPv6Network

from . import _fast

#: ``address_at(data, off)``: the address in ``data[off:off + 16]`` (the caller has checked the
#: length).
address_at = _fast.address_at
#: ``address_int(address)``: the 128-bit integer of an IPv6Address.
address_int = _fast.address_int


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
