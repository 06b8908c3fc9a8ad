"""Socket buffer sizes (``[transport] receive-buffer`` and ``send-buffer``).

A burst of registrations from many mobile nodes arrives faster than one reactor turn reads it,
and what the kernel cannot queue on the socket it drops where haha cannot count it (Linux counts
it in ``/proc/net/snmp6`` as ``Udp6RcvbufErrors``, or in the packet socket's drop statistics).
The kernel's default queue (``net.core.rmem_default``, 208 KiB on most systems) holds about
1,500 signalling packets. With CAP_NET_ADMIN, ``SO_RCVBUFFORCE``/``SO_SNDBUFFORCE`` grant a size
above ``net.core.rmem_max``/``wmem_max``; without it the plain options are capped there. Linux
books twice the size asked for (its own overhead) and reports the doubled figure: the size
granted is that figure halved.

What the kernel still drops is counted with ``SO_RXQ_OVFL`` (:class:`KernelDrops`): with the
option on, every packet read through ``recvmsg`` carries (as a control message, a native 32-bit
integer) the number of packets the kernel has dropped on that socket so far for want of room;
UDP and AF_PACKET sockets both support it. A drop is seen with the next packet queued after it.
"""

import socket
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger

SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: Linux's ``SO_RXQ_OVFL`` (Python's socket module does not name it).
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
#: Room for the ``SO_RXQ_OVFL`` control message in ``recvmsg``'s ancillary buffer.
RXQ_OVFL_SPACE = socket.CMSG_SPACE(4)

_OPTIONS = {
    "receive": (SO_RCVBUFFORCE, socket.SO_RCVBUF, "net.core.rmem_max"),
    "send": (SO_SNDBUFFORCE, socket.SO_SNDBUF, "net.core.wmem_max"),
}


def set_buffer(sock: socket.socket, direction: str, size: int
               ) -> tuple[int, str | None] | tuple[None, None]:
    """Ask for a ``direction`` (``"receive"`` or ``"send"``) buffer of ``size`` octets on
    ``sock``; returns ``(granted, limit)``: the size the kernel granted and the sysctl that
    capped it when it granted less. ``size`` 0 leaves the kernel's default and returns
    ``(None, None)``."""
    if not size:
        return None, None
    force, plain, sysctl = _OPTIONS[direction]
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, plain) // 2
    return granted, (sysctl if granted < size else None)


def apply_buffers(sock: socket.socket, log: Logger, what: str, receive: int = 0,
                  send: int = 0) -> dict[str, int | None]:
    """:func:`set_buffer` for both directions, logging once what was granted when it is less
    than asked (with the way to get more); returns ``{"receive": granted, "send": granted}``."""
    out: dict[str, int | None] = {}
    for direction, size in (("receive", receive), ("send", send)):
        granted, limit = set_buffer(sock, direction, size)
        out[direction] = granted
        if limit is not None:
            log.warn("{what}: {direction} buffer of {granted} octets instead of {asked}: raise "
                     "{limit} or run with CAP_NET_ADMIN", what=what, direction=direction,
                     granted=granted, asked=size, limit=limit)
    return out


def count_kernel_drops(sock: Any) -> None:
    """Turn ``SO_RXQ_OVFL`` on for ``sock`` (:class:`KernelDrops` reads what it reports)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)


class KernelDrops:
    """What one socket's ``SO_RXQ_OVFL`` control messages say, added to
    ``counters[name]``: :meth:`seen` is given each ``recvmsg``'s ancillary data."""

    __slots__ = ("counters", "name", "last")

    def __init__(self, counters: "Counter[str]", name: str = "kernel_drops") -> None:
        self.counters = counters
        self.name = name
        counters[name] += 0  # shown (as 0) before the first drop
        #: The socket's drop count in the last control message (it only grows, modulo 2**32).
        self.last = 0

    def seen(self, ancdata: Iterable[tuple[int, int, bytes]]) -> None:
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(data) >= 4:
                total = int.from_bytes(data[:4], sys.byteorder)
                grew = (total - self.last) & 0xFFFFFFFF
                if grew:
                    self.counters[self.name] += grew
                    self.last = total
                return
