"""Super-packets through the user-space tunnel as outer fragments (docs/io.md, "Super-packets").

A TUN opened with offloads (:mod:`haha.io.tun`) hands over a TCP flow as GSO super-packets
of up to 64 KB. Cutting them into wire-sized segments in Python and tunnelling each costs
about as much as reading them one by one. This module lets the tunnel carry a super-packet
whole instead:

- **Entry point.** The inner TCP checksum (left partial by the kernel) is completed once over
  the whole super-packet (:func:`complete_tcp_checksum`; the sum is taken by the kernel,
  :class:`KernelSum`, or in Python when it cannot), and the inner packet is sent through an ``AF_INET6``/``SOCK_RAW`` socket of
  protocol 41 *without* header inclusion (:class:`TunnelSocket`): the kernel writes the outer
  header (source from ``IPV6_PKTINFO``, Hop Limit ``IPV6_UNICAST_HOPS``, Traffic Class 0,
  Flow Label 0 with ``IPV6_AUTOFLOWLABEL`` off) and fragments the tunnel packet in C (RFC 2473
  section 7 lets the entry point fragment the tunnel packet it builds).
- **Exit point.** The kernel reassembles the fragments in C and hands the inner packet to the
  same kind of socket (Linux gives an IPv6 raw socket the payload without the IPv6 header; the
  outer addresses come from the source address and ``IPV6_PKTINFO``). With a raw socket of
  protocol 41 open the kernel answers nothing (no Parameter Problem). An inner TCP segment
  larger than the tunnel MTU is written to the TUN with a ``virtio_net_hdr`` marking it GSO
  TCPv6 (:func:`gso_header`): ``gso_size`` is the tunnel MTU's segment size and the checksum
  is left to the kernel (``NEEDS_CSUM`` with the pseudo-header sum in the field), so local
  delivery takes one large segment and forwarding (a mobile router's network, the home
  agent's correspondents) is segmented again by the kernel in C. Its checksum is verified
  first (:func:`tcp_checksum_ok`, one sum): the kernel trusts a ``NEEDS_CSUM`` packet, so
  a super-packet damaged between the ends is counted and dropped here.

The raw transport's netfilter guard drops IPv6-in-IPv6 addressed to us before the kernel
sees it; :meth:`haha.io.raw.RawTransport.pass_tunnel_fragments` lets fragments of it through
to reassembly (the packet socket's filter does not hand fragments up, so nothing is seen
twice).
"""

import errno as _errno
import socket
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from ipaddress import IPv6Address
from typing import Any, Optional, Union

from twisted.internet.interfaces import IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from ..logging import class_logger
from .offload import (IPPROTO_TCP, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6,
                      VNET_HDR, ones_sum)
from .system import in_netns

_Bytes = Union[bytes, memoryview]
IPPROTO_IPV6 = 41
#: ``<linux/in6.h>``: ``IPV6_TCLASS``, ``IPV6_AUTOFLOWLABEL``.
IPV6_TCLASS = 67
IPV6_AUTOFLOWLABEL = 70
SO_MARK = 36
SO_RCVBUFFORCE = 33
#: The largest inner packet one tunnel packet carries (the outer Payload Length).
MAX_INNER = 0xFFFF
#: Receive buffer of the tunnel socket: room for a few dozen reassembled super-packets.
RECEIVE_BUFFER = 4 << 20
READ_BURST = 64
#: ``struct in6_pktinfo`` (address, interface index) and the room its control message takes.
_PKTINFO = struct.Struct("=16sI")
_PKTINFO_SPACE = socket.CMSG_SPACE(_PKTINFO.size)
_PLEN = struct.Struct("!H")
_CSUM = struct.Struct("!H")
#: The receiver of a reassembled tunnel packet: outer source, outer destination (16 octets
#: each), the inner packet.
Receiver = Callable[[bytes, bytes, bytes], object]


#: The sum of a TCP segment with its checksum field taken as zero (a segment's octets in,
#: the one's complement sum out, None when it cannot tell).
SegmentSum = Callable[[_Bytes], Optional[int]]


def python_segment_sum(segment: _Bytes) -> int:
    """The one's complement sum of a TCP ``segment`` with its checksum field (octets 16-17)
    taken as zero, in Python (:func:`haha.io.offload.ones_sum`)."""
    return (ones_sum(segment) - (segment[16] << 8 | segment[17])) % 0xFFFF


def _segment_sum(segment: _Bytes, summer: Optional[SegmentSum]) -> int:
    total = summer(segment) if summer is not None else None
    return python_segment_sum(segment) if total is None else total


def complete_tcp_checksum(packet: _Bytes, start: int = 40,
                          summer: Optional[SegmentSum] = None) -> bytes:
    """The checksum field (2 octets) that completes the TCP segment at ``start`` of IPv6
    ``packet`` (TCP directly after the 40-octet header), whatever the field holds now (a
    partial pseudo-header sum, or anything): the complement of the one's complement sum of
    the pseudo-header (RFC 8200 8.1) and the segment with the field taken as zero.
    ``summer`` sums the segment (:class:`KernelSum`; in Python without it, or when it
    cannot)."""
    total = (ones_sum(packet[8:40]) + len(packet) - start + IPPROTO_TCP +
             _segment_sum(packet[start:], summer))
    return _CSUM.pack(0xFFFF - total % 0xFFFF)


def tcp_checksum_ok(packet: _Bytes, start: int = 40,
                    summer: Optional[SegmentSum] = None) -> bool:
    """Whether the TCP segment at ``start`` of IPv6 ``packet`` (TCP directly after the
    40-octet header) carries a correct checksum: with its pseudo-header it sums to zero.
    ``summer`` as for :func:`complete_tcp_checksum`."""
    at = start + 16
    total = (ones_sum(packet[8:40]) + len(packet) - start + IPPROTO_TCP +
             _segment_sum(packet[start:], summer) + (packet[at] << 8 | packet[at + 1]))
    return total % 0xFFFF == 0


#: The protocol number :class:`KernelSum` uses on loopback (RFC 3692: for experimentation).
KERNEL_SUM_PROTOCOL = 253
IPV6_CHECKSUM = 7
_LOOPBACK = ("::1", 0)


class KernelSum:
    """One's complement sums of TCP segments computed by the kernel, in C, while it copies
    them: a raw socket of protocol 253 with ``IPV6_CHECKSUM`` at offset 16 sends the segment
    to ``::1``; the kernel sums the payload with the field taken as zero and stores the
    complement of that plus its pseudo-header (``::1``, ``::1``, length, 253) in the
    field; a second raw socket bound to ``::1`` reads back only the first 32 octets
    (the rest is discarded in the kernel). The segment's own sum is what remains once the
    loopback pseudo-header is taken out. About 6 us of CPU for 64 KB where Python's
    integers take about 95.

    Anything that goes wrong (no loopback, a firewall dropping protocol 253, the packet not
    there yet, something else read back) answers None, counted, and the caller sums in
    Python; after ``MAX_FAILURES`` failures in a row it is not asked again."""

    MAX_FAILURES = 16
    log = class_logger()

    def __init__(self, netns: Optional[str] = None,
                 opener: Optional[Callable[[], tuple[Any, Any]]] = None) -> None:
        self._opener = opener if opener is not None else (lambda: self._open(netns))
        self._tx: Any = None
        self._rx: Any = None
        self._failures = 0
        self.counters: Counter[str] = Counter()

    @staticmethod
    def _open(netns: Optional[str]) -> tuple[socket.socket, socket.socket]:
        with in_netns(netns):
            tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                               KERNEL_SUM_PROTOCOL)
            rx = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                               KERNEL_SUM_PROTOCOL)
        try:
            tx.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 16)
            rx.bind(_LOOPBACK)
        except OSError:
            tx.close()
            rx.close()
            raise
        return tx, rx

    @property
    def running(self) -> bool:
        return self._tx is not None

    def start(self) -> None:
        """Open the sockets; when that fails (no loopback), log it: every sum is then taken
        in Python."""
        if self._tx is not None:
            return
        try:
            self._tx, self._rx = self._opener()
        except OSError as e:
            self.counters["unavailable"] += 1
            self.log.warn("checksums in Python: cannot open the loopback sockets: {error}",
                          error=str(e))
            return
        self._failures = 0

    def stop(self) -> None:
        """Close the sockets (idempotent)."""
        tx, rx, self._tx, self._rx = self._tx, self._rx, None, None
        for sock in (tx, rx):
            if sock is not None:
                sock.close()

    def __call__(self, segment: _Bytes) -> Optional[int]:
        """The sum of ``segment`` with octets 16-17 taken as zero, or None (module and class
        docstrings)."""
        tx, rx = self._tx, self._rx
        n = len(segment)
        if tx is None or n < 32 or self._failures >= self.MAX_FAILURES:
            return None
        try:
            tx.sendto(segment, _LOOPBACK)
            back = rx.recv(32)
        except OSError as e:
            self._failed(f"error.{_errno.errorcode.get(e.errno or 0, e.errno)}")
            return None
        if len(back) != 32 or back[:16] != segment[:16] or back[18:] != segment[18:32]:
            self._drain()
            self._failed("mismatch")
            return None
        self._failures = 0
        self.counters["sums"] += 1
        # back[16:18] = ~fold(pseudo + sum): pseudo is ::1 + ::1 (1 + 1), length, 253
        return (0xFFFF - (back[16] << 8 | back[17]) - (2 + n + KERNEL_SUM_PROTOCOL)) % 0xFFFF

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self.counters[reason] += 1
        if self._failures == self.MAX_FAILURES:
            self.log.warn("checksums in Python from now on: the kernel's sums failed "
                          "{count} times in a row ({reason})", count=self._failures,
                          reason=reason)

    def _drain(self) -> None:
        """Discard whatever else is queued (late answers of earlier sums)."""
        for _ in range(64):
            try:
                self._rx.recv(32)
            except OSError:
                return


def pseudo_sum(packet: _Bytes, start: int = 40) -> bytes:
    """What the checksum field holds for ``NEEDS_CSUM`` (the kernel's own
    ``~tcp_v6_check(len, saddr, daddr, 0)``): the folded one's complement sum of the TCP
    pseudo-header of ``packet``, not complemented."""
    total = ones_sum(packet[8:40]) + (len(packet) - start) + IPPROTO_TCP
    return _CSUM.pack(total % 0xFFFF)


def gso_header(packet: _Bytes, mtu: int) -> Optional[bytes]:
    """The ``virtio_net_hdr`` that hands inner ``packet`` to a TUN as one GSO TCPv6
    super-packet, when it is IPv6 directly followed by TCP and longer than ``mtu`` (the
    segments the kernel cuts, when it must, fit ``mtu``); None otherwise (write it as it
    is). The caller puts :func:`pseudo_sum` into the checksum field."""
    n = len(packet)
    if n <= mtu or n < 60 or packet[6] != IPPROTO_TCP or packet[0] >> 4 != 6 or \
            40 + (packet[4] << 8 | packet[5]) != n:
        return None
    head = 40 + ((packet[52] >> 4) << 2)
    if head < 60 or head > n or mtu - head < 8:
        return None
    return VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, head,
                         mtu - head, 40, 16)


def open_tunnel_socket(netns: Optional[str] = None) -> socket.socket:
    """A non-blocking ``AF_INET6``/``SOCK_RAW`` socket of protocol 41 in ``netns``."""
    with in_netns(netns):
        return socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                             IPPROTO_IPV6)


@implementer(IReadDescriptor)
class TunnelSocket:
    """One protocol-41 raw socket that sends inner packets as tunnel packets the kernel
    fragments, and receives the tunnel packets the kernel reassembled (module docstring).

    ``hop_limit``: the outer Hop Limit. ``mark``: ``SO_MARK`` on what it sends (a mobile
    node's own packets keep the main table). ``opener``: makes the socket (default
    :func:`open_tunnel_socket` in ``netns``; tests pass a fake)."""

    log = class_logger()

    def __init__(self, reactor: Any, hop_limit: int, mark: Optional[int] = None,
                 netns: Optional[str] = None,
                 opener: Optional[Callable[[], Any]] = None) -> None:
        if not 1 <= hop_limit <= 255:
            raise ValueError(f"tunnel hop limit {hop_limit} out of range 1-255")
        self._reactor = reactor
        self.hop_limit = hop_limit
        self.mark = mark
        self._opener = opener if opener is not None else (lambda: open_tunnel_socket(netns))
        self._sock: Any = None
        self._receiver: Optional[Receiver] = None
        self._sockaddr: dict[bytes, tuple[str, int, int, int]] = {}
        self._packed: dict[str, bytes] = {}
        self.counters: Counter[str] = Counter()

    @property
    def running(self) -> bool:
        return self._sock is not None

    def start(self, receiver: Receiver) -> None:
        """Open and configure the socket, then hand every reassembled tunnel packet to
        ``receiver(outer_src, outer_dst, inner)``. Raises ``OSError`` when the system refuses
        (not root) and leaves nothing open."""
        if self._sock is not None:
            raise RuntimeError("tunnel socket already started")
        sock = self._opener()
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, self.hop_limit)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            if self.mark:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except OSError:  # not allowed: the kernel's default stays
                self.counters["receive_buffer_default"] += 1
        except Exception:
            sock.close()
            raise
        self._sock = sock
        self._receiver = receiver
        self._reactor.addReader(self)

    def stop(self) -> None:
        """Stop reading and close the socket (idempotent)."""
        if self._sock is None:
            return
        self._reactor.removeReader(self)
        sock, self._sock = self._sock, None
        self._receiver = None
        sock.close()

    def send(self, source: bytes, destination: bytes, buffers: Sequence[_Bytes]) -> bool:
        """Send the inner packet made of ``buffers`` (gathered by the kernel, not copied
        here) in a tunnel packet from ``source`` to ``destination`` (16 octets each). Errors
        are counted (``send_errors``, ``send_error.<ERRNO>``), never raised."""
        if self._sock is None:
            self.counters["send_not_started"] += 1
            return False
        address = self._sockaddr.get(destination)
        if address is None:
            if len(self._sockaddr) >= 4096:
                self._sockaddr.clear()
            address = self._sockaddr[destination] = (
                str(IPv6Address(destination)), 0, 0, 0)
        try:
            self._sock.sendmsg(buffers, [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                                          _PKTINFO.pack(source, 0))], 0, address)
        except OSError as e:
            self.counters["send_errors"] += 1
            self.counters[f"send_error.{_errno.errorcode.get(e.errno or 0, e.errno)}"] += 1
            return False
        self.counters["sent"] += 1
        return True

    # IReadDescriptor

    def fileno(self) -> int:
        return int(self._sock.fileno()) if self._sock is not None else -1

    def doRead(self) -> None:
        for _ in range(READ_BURST):
            sock, receiver = self._sock, self._receiver
            if sock is None or receiver is None:
                return
            try:
                data, ancillary, _, address = sock.recvmsg(MAX_INNER, _PKTINFO_SPACE)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:
                self.counters["receive_errors"] += 1
                self.log.warn("tunnel socket receive failed: {error}", error=str(e))
                return
            destination = None
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and \
                        len(value) >= 16:
                    destination = bytes(value[:16])
            if destination is None:
                self.counters["received_no_pktinfo"] += 1
                continue
            text = address[0].split("%", 1)[0]
            source = self._packed.get(text)
            if source is None:
                if len(self._packed) >= 4096:
                    self._packed.clear()
                source = self._packed[text] = IPv6Address(text).packed
            self.counters["received"] += 1
            try:
                receiver(source, destination, data)
            except Exception:
                self.counters["receiver_errors"] += 1
                self.log.failure("tunnel socket receiver failed")

    def connectionLost(self, reason: Failure) -> None:
        self.counters["receive_errors"] += 1
        self.log.error("tunnel socket lost: {reason}", reason=reason.getErrorMessage())

    def logPrefix(self) -> str:
        return "TunnelSocket"


__all__ = ["KERNEL_SUM_PROTOCOL", "KernelSum", "MAX_INNER", "SegmentSum", "TunnelSocket",
           "complete_tcp_checksum", "gso_header", "open_tunnel_socket", "pseudo_sum",
           "python_segment_sum", "tcp_checksum_ok"]
