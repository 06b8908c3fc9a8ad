"""Reading IPv6 addresses out of packets quickly.

``IPv6Address(int)`` is markedly cheaper than ``IPv6Address(bytes)`` (it skips the packed-form
checks); the decoders build several addresses per packet, so they share this one helper.
"""

from ipaddress import IPv6Address

_from_bytes = int.from_bytes


def address_at(data, off):
    """The address in ``data[off:off + 16]``; the caller has checked that the octets exist."""
    return IPv6Address(_from_bytes(data[off : off + 16], "big"))
