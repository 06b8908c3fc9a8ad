"""Checksum and segmentation offloads of the user-space data plane (docs/io.md, "Offloads").

The kernel leaves work for "hardware" in two places the user-space tunnels meet:

- **Partial checksums on receive.** A packet that crossed a veth (or any device with transmit
  checksum offload) from a sender in the same machine reaches an ``AF_PACKET`` socket with its
  TCP/UDP checksum unfinished (``CHECKSUM_PARTIAL``; the socket's ``tpacket_auxdata`` says
  ``TP_STATUS_CSUMNOTREADY``): the checksum field holds only the folded sum of the
  pseudo-header, and "hardware" would add the one's complement sum from the transport header
  (``csum_start``) to the end of the packet and store its complement in the field
  (``csum_offset``). A tunnel endpoint that hands the inner packet on as it is makes the next
  kernel drop it. :func:`complete_partial_checksum` finds the transport header (through
  IPv6-in-IPv6 and extension headers: the auxiliary data carries no ``csum_start``) and does
  what the hardware would have done.
- **TUN offloads.** A TUN device opened with ``IFF_VNET_HDR`` and told ``TUNSETOFFLOAD`` hands
  user space packets with a ``struct virtio_net_hdr`` in front: checksums may be left partial
  (``VIRTIO_NET_HDR_F_NEEDS_CSUM`` with ``csum_start``/``csum_offset``) and TCP may arrive as one
  GSO super-packet of up to 64 KB (``gso_type`` TCPv6, ``gso_size`` the segment payload,
  ``hdr_len`` the headers to repeat in every segment). :func:`segments` turns one such read into
  the wire-sized packets, each with a finished checksum, so one read (and one route lookup)
  serves up to 45 full-sized segments.

The one's complement sum of a string of octets equals the big-endian integer they form modulo
0xFFFF (2**16 is 1 modulo 0xFFFF), which Python computes in C: :func:`ones_sum`.
"""

import struct
from itertools import repeat
from typing import List, Literal, Optional, Tuple

#: ``struct virtio_net_hdr`` (legacy layout, the host's byte order, 10 octets).
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80
#: The header written in front of a finished packet: no offload asked of the kernel.
VNET_NONE = bytes(VNET_HDR_LEN)

#: ``<linux/if_packet.h>``: ``SOL_PACKET`` option and control message with ``tpacket_auxdata``.
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 1 << 3
#: ``struct tpacket_auxdata { u32 tp_status, tp_len, tp_snaplen; u16 tp_mac, tp_net,
#: tp_vlan_tci, tp_vlan_tpid; }``.
AUXDATA = struct.Struct("=IIIHHHH")

IPPROTO_HOPOPTS = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_DSTOPTS = 60
#: Offset of the checksum inside the transport header.
CHECKSUM_OFFSET = {IPPROTO_TCP: 16, IPPROTO_UDP: 6}
_EXTENSIONS = (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS)
#: Headers walked at most (extension headers and nested IPv6) before giving up.
MAX_HEADERS = 16
_TCP_FIN_PSH = 0x09
_TCP_CWR = 0x80

_BIG: "repeat[Literal['big']]" = repeat("big")
_PLEN = struct.Struct("!H")
_SEQ = struct.Struct("!I")


class OffloadError(ValueError):
    """A virtio_net_hdr or a packet that does not fit the offload it asks for."""


#: Octets summed per integer by :func:`ones_sum` (even): a longer string is summed in pieces,
#: because reducing one huge integer modulo 0xFFFF costs more than adding the pieces first.
SUM_CHUNK = 4096


def ones_sum(data: "bytes | memoryview") -> int:
    """The one's complement sum of ``data`` as 16-bit big-endian words (an odd length padded
    with a zero octet), in 0..0xFFFE (0xFFFF and 0 both mean zero)."""
    n = len(data)
    if n > SUM_CHUNK:
        # Every piece but the last has an even length, so each starts on a word boundary
        # and its integer counts once (2**16 is 1 modulo 0xFFFF).
        mv = memoryview(data)
        total = sum(map(int.from_bytes, [mv[i:i + SUM_CHUNK] for i in range(0, n, SUM_CHUNK)],
                        _BIG))
        if n & 1:  # the last piece is padded with a zero octet: its integer times 256
            last = n - (n - 1) % SUM_CHUNK - 1
            total += int.from_bytes(mv[last:], "big") * 255
        return total % 0xFFFF
    if n & 1:
        return (int.from_bytes(data, "big") << 8) % 0xFFFF
    return int.from_bytes(data, "big") % 0xFFFF


def _finish(total: int) -> int:
    """The checksum to store for a sum: its complement, never 0 (0 means "no checksum" to
    UDP, RFC 768; 0xFFFF is the same value in one's complement)."""
    return 0xFFFF - (total % 0xFFFF)


def transport_header(packet: "bytes | bytearray | memoryview") -> Optional[Tuple[int, int, int]]:
    """``(start, checksum_offset, end)`` of the first TCP or UDP header of an IPv6 packet,
    looking through Hop-by-Hop, Routing and Destination Options headers and IPv6-in-IPv6;
    ``end`` is where the innermost packet's payload ends. None when there is none or the
    packet is cut short, fragmented or not IPv6."""
    n = len(packet)
    if n < 40 or packet[0] >> 4 != 6:
        return None
    end = 40 + _PLEN.unpack_from(packet, 4)[0]
    if end > n:
        return None
    nh, pos = packet[6], 40
    for _ in range(MAX_HEADERS):
        if nh in CHECKSUM_OFFSET:
            offset = CHECKSUM_OFFSET[nh]
            return (pos, offset, end) if pos + offset + 2 <= end else None
        if nh in _EXTENSIONS:
            if pos + 8 > end:
                return None
            nh, pos = packet[pos], pos + ((packet[pos + 1] + 1) << 3)
        elif nh == IPPROTO_IPV6:
            if pos + 40 > end or packet[pos] >> 4 != 6:
                return None
            inner_end = pos + 40 + _PLEN.unpack_from(packet, pos + 4)[0]
            if inner_end > end:
                return None
            nh, end, pos = packet[pos + 6], inner_end, pos + 40
        else:
            return None
    return None


def finish_checksum(packet: bytearray, start: int, offset: int, end: int) -> None:
    """Do what checksum offload hardware does (``CHECKSUM_PARTIAL``): the field at
    ``start + offset`` holds the folded pseudo-header sum; store there the complement of the
    one's complement sum of ``packet[start:end]``."""
    at = start + offset
    packet[at:at + 2] = _finish(ones_sum(bytes(packet[start:end]))).to_bytes(2, "big")


def complete_partial_checksum(packet: bytes) -> Optional[bytes]:
    """The packet with its TCP/UDP checksum completed (the packet came with
    ``TP_STATUS_CSUMNOTREADY``: module docstring), or None when it has no TCP/UDP header this
    can find (then nothing can be completed)."""
    where = transport_header(packet)
    if where is None:
        return None
    out = bytearray(packet)
    finish_checksum(out, *where)
    return bytes(out)


def partial_header(packet: "bytes | bytearray | memoryview") -> Optional[bytes]:
    """The ``virtio_net_hdr`` that hands ``packet``, whose TCP/UDP checksum was left partial
    (``TP_STATUS_CSUMNOTREADY``), to a TUN with offloads as it is, for the kernel to finish
    or trust as it would have without the tunnel (``NEEDS_CSUM`` over the first TCP/UDP
    header :func:`transport_header` finds); None when there is none (complete it here)."""
    n = len(packet)
    if n >= 48 and packet[0] >> 4 == 6 and 40 + (packet[4] << 8 | packet[5]) == n:
        common = _DIRECT_PARTIAL.get(packet[6])  # TCP or UDP right after the fixed header
        if common is not None and 40 + CHECKSUM_OFFSET[packet[6]] + 2 <= n:
            return common
    where = transport_header(packet)
    if where is None:
        return None
    start, offset, end = where
    if end != len(packet):  # the checksum covers the packet's end: nothing may follow
        return None
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, start,
                         offset)


#: :func:`partial_header` of a packet with TCP or UDP right after its fixed header.
_DIRECT_PARTIAL = {proto: VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
                                        0, 0, 40, offset)
                   for proto, offset in CHECKSUM_OFFSET.items()}


def auxdata_status(ancdata: List[Tuple[int, int, bytes]]) -> int:
    """``tp_status`` of the ``PACKET_AUXDATA`` control message in ``recvmsg``'s ancillary data
    (0 when there is none)."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 4:
            return int.from_bytes(data[:4], "little")
    return 0


def segments(frame: bytes) -> List[bytes]:
    """The wire-sized packets carried by one read from a TUN with ``IFF_VNET_HDR``: the
    ``virtio_net_hdr`` in front is removed; a partial checksum is completed; a TCPv6 GSO
    super-packet is cut into segments of ``gso_size`` payload octets, each with the headers
    repeated (IPv6 Payload Length, TCP sequence number, FIN/PSH only on the last segment, CWR
    only on the first) and its own checksum. Raises :class:`OffloadError` for a header that
    does not fit the packet or asks for a segmentation other than TCPv6."""
    if len(frame) < VNET_HDR_LEN:
        raise OffloadError(f"{len(frame)} octets are shorter than a virtio_net_hdr")
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    packet = frame[VNET_HDR_LEN:]
    n = len(packet)
    gso = gso_type & ~VIRTIO_NET_HDR_GSO_ECN
    if gso == VIRTIO_NET_HDR_GSO_NONE:
        if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            return [packet]
        if csum_start + csum_offset + 2 > n:
            raise OffloadError(f"checksum at {csum_start}+{csum_offset} beyond {n} octets")
        # The field holds the pseudo-header sum: summed over the frame as it is, without a
        # copy; the packet is put together once around the finished field.
        at = VNET_HDR_LEN + csum_start + csum_offset
        field = _finish(ones_sum(memoryview(frame)[VNET_HDR_LEN + csum_start:]))
        return [b"".join((frame[VNET_HDR_LEN:at], _PLEN.pack(field), frame[at + 2:]))]
    if gso != VIRTIO_NET_HDR_GSO_TCPV6:
        raise OffloadError(f"GSO type {gso_type} is not TCPv6")
    # The TCP header starts at csum_start; its data offset says where the payload begins
    # (hdr_len is only a hint, RFC-less: the kernel's own value is used by nobody but us).
    if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM or csum_offset != 16 or csum_start < 40 \
            or csum_start + 20 > n or gso_size == 0:
        raise OffloadError("TCPv6 GSO without a TCP checksum to complete")
    head = csum_start + ((packet[csum_start + 12] >> 4) << 2)
    if head > n or head < csum_start + 20:
        raise OffloadError(f"TCP header of a GSO packet ends at {head}, beyond {n} octets")
    if n - head <= gso_size:
        out = bytearray(packet)
        finish_checksum(out, csum_start, 16, n)
        return [bytes(out)]
    template = bytearray(packet[:head])
    # The pseudo-header sum in the field counts the super-packet's length (or none, depending
    # on the kernel): recompute it per segment from the addresses of the innermost header.
    ip = _innermost_ipv6(packet, csum_start)
    if ip is None:
        raise OffloadError("no IPv6 header in front of the TCP header of a GSO packet")
    pseudo_addr = ones_sum(bytes(packet[ip + 8:ip + 40])) + IPPROTO_TCP
    seq = _SEQ.unpack_from(packet, csum_start + 4)[0]
    tcp_flags = packet[csum_start + 13]
    out_list = []
    mv = memoryview(packet)
    pos = head
    first = True
    while pos < n:
        chunk = mv[pos:pos + gso_size]
        last = pos + len(chunk) >= n
        f = tcp_flags
        if not last:
            f &= ~_TCP_FIN_PSH
        if not first:
            f &= ~_TCP_CWR
        template[csum_start + 13] = f
        _SEQ.pack_into(template, csum_start + 4, seq)
        seg_len = head - csum_start + len(chunk)
        # Every IPv6 header in front (outer ones of a tunnel too) grows with the segment.
        _set_lengths(template, ip, len(chunk) + head)
        template[csum_start + 16:csum_start + 18] = b"\0\0"
        total = pseudo_addr + seg_len + ones_sum(bytes(template[csum_start:])) + \
            ones_sum(chunk)
        template[csum_start + 16:csum_start + 18] = _finish(total).to_bytes(2, "big")
        out_list.append(bytes(template) + chunk)
        seq = (seq + len(chunk)) & 0xFFFFFFFF
        pos += len(chunk)
        first = False
    return out_list


def _innermost_ipv6(packet: bytes, stop: int) -> Optional[int]:
    """Offset of the last IPv6 header before offset ``stop`` (the one the transport header
    belongs to)."""
    nh, pos, last = packet[6], 40, 0
    for _ in range(MAX_HEADERS):
        if pos >= stop:
            return last if pos == stop else None
        if nh in _EXTENSIONS:
            nh, pos = packet[pos], pos + ((packet[pos + 1] + 1) << 3)
        elif nh == IPPROTO_IPV6:
            last, nh, pos = pos, packet[pos + 6], pos + 40
        else:
            return None
    return None


def _set_lengths(template: bytearray, innermost: int, total: int) -> None:
    """Set the Payload Length of the IPv6 header at offset 0 and of the one at ``innermost``
    (and of none between: a GSO packet from a TUN has at most those two) for a packet of
    ``total`` octets."""
    _PLEN.pack_into(template, 4, total - 40)
    if innermost:
        _PLEN.pack_into(template, innermost + 4, total - innermost - 40)
