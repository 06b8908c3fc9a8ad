"""Reading IPv6 addresses out of packets quickly.

``IPv6Address(int)`` is markedly cheaper than ``IPv6Address(bytes)`` (it skips the packed-form
checks); the decoders build several addresses per packet, so they share this one helper.
"""

from ipaddress import IPv6Address, IPv6Network

_from_bytes = int.from_bytes


def address_at(data, off):
    """The address in ``data[off:off + 16]``; the caller has checked that the octets exist."""
    return IPv6Address(_from_bytes(data[off : off + 16], "big"))


def packed(address):
    """The 16 octets of ``address``; a TypeError (turned into WireError by the encoders) for
    anything that is not an IPv6Address, so an IPv4 address cannot slip into a 16-octet field."""
    if type(address) is not IPv6Address:
        raise TypeError(f"{address!r} is not an IPv6Address")
    return address.packed


def network_parts(network):
    """``(prefix length, 16 octets)`` of an IPv6Network, TypeError for anything else."""
    if type(network) is not IPv6Network:
        raise TypeError(f"{network!r} is not an IPv6Network")
    return network.prefixlen, network.network_address.packed
