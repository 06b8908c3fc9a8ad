"""Reading and writing IPv6 addresses quickly.

The decoders build several addresses per packet and the encoders pack several, so these helpers
matter on the home agent's hot path. ``IPv6Address(int)`` is markedly cheaper than
``IPv6Address(bytes)``; cheaper still is filling the two slots (``_ip``, ``_scope_id``) that
CPython's ``ipaddress`` keeps. That shortcut is only used when a self-check at import shows it
builds addresses equal, in value, hash and text, to the public constructor's; otherwise the
public API is used.
"""

from ipaddress import IPv6Address, IPv6Network
from operator import attrgetter

_from_bytes = int.from_bytes


def _public_address_at(data, off):
    return IPv6Address(_from_bytes(data[off : off + 16], "big"))


def _public_int(address):
    return int(address)


def _make_fast():
    new = object.__new__
    cls = IPv6Address

    def address_at(data, off):
        a = new(cls)
        a._ip = _from_bytes(data[off : off + 16], "big")
        a._scope_id = None
        return a

    as_int = attrgetter("_ip")

    probe = bytes(range(1, 17))
    slow, fast = IPv6Address(probe), address_at(probe, 0)
    ok = (
        fast == slow and hash(fast) == hash(slow) and str(fast) == str(slow)
        and fast.packed == probe and as_int(slow) == int(slow)
    )
    return (address_at, as_int) if ok else (_public_address_at, _public_int)


try:
    address_at, address_int = _make_fast()
except (AttributeError, TypeError):  # an ipaddress without those slots
    address_at, address_int = _public_address_at, _public_int

# address_at(data, off): the address in data[off:off + 16] (the caller has checked the length).
# address_int(address): the 128-bit integer of an IPv6Address.


def packed(address):
    """The 16 octets of ``address``; a TypeError (turned into WireError by the encoders) for
    anything that is not an IPv6Address, so an IPv4 address cannot slip into a 16-octet field."""
    if type(address) is not IPv6Address:
        raise TypeError(f"{address!r} is not an IPv6Address")
    return address_int(address).to_bytes(16, "big")


def network_parts(network):
    """``(prefix length, 16 octets)`` of an IPv6Network, TypeError for anything else."""
    if type(network) is not IPv6Network:
        raise TypeError(f"{network!r} is not an IPv6Network")
    return network.prefixlen, address_int(network.network_address).to_bytes(16, "big")
