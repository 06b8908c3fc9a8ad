"""ICMPv6 echo (RFC 4443 4.1, 4.2) from inside a network namespace, without the ``ping`` binary,
and the Duplicate Address Detection probe a returning mobile node sends.

Minimal machines (and this project's CI) may lack iputils; the lab only needs "did an echo
reply come back before the deadline". :func:`ping` blocks its thread (the lab and the tests run
it in a worker thread when a reactor must keep turning); the socket is created inside the
namespace, so the whole exchange happens there.

:func:`dad_probe` sends what deployed mobile nodes send when they come home (docs/protocol.md 9): a
Neighbour Solicitation for the home address from the unspecified address (RFC 4862 5.4.2) to its
solicited-node group, and returns the Neighbour Advertisements that defend it (the home agent's
proxy ND must). It builds the packet by hand (not with haha's codec), so it checks the home agent
against an independent encoding.
"""

import os
import select
import socket
import struct
import time
from collections.abc import Callable
from ipaddress import IPv6Address

from ..io.system import in_netns
from .timing import scaled

ECHO_REQUEST = 128
ECHO_REPLY = 129
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
IPPROTO_ICMPV6 = 58


def ping(netns: str | None, destination: IPv6Address | str,
         source: IPv6Address | str | None = None, attempts: int = 5, interval: float = 0.5,
         interface: str | None = None, clock: Callable[[], float] = time.monotonic) -> int:
    """Send up to ``attempts`` echo requests to ``destination`` from namespace ``netns``, one
    every ``interval`` seconds, and return the number of the attempt (1-based) that got a reply,
    or 0 when none did. ``source`` pins the source address (it must be assigned in ``netns``);
    ``interface`` names the interface for a link-local destination."""
    dst = IPv6Address(destination)
    with in_netns(netns):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        scope = socket.if_nametoindex(interface) if interface else 0
    try:
        if source is not None:
            s.bind((str(IPv6Address(source)), 0))
        ident = os.getpid() & 0xFFFF
        for seq in range(1, attempts + 1):
            # The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets (RFC 3542 3.1).
            payload = b"haha-lab-ping-%d" % seq
            s.sendto(struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq) + payload,
                     (str(dst), 0, 0, scope))
            deadline = clock() + scaled(interval)
            while True:
                left = deadline - clock()
                if left <= 0:
                    break
                ready, _, _ = select.select([s], [], [], left)
                if not ready:
                    break
                data, addr = s.recvfrom(65535)
                if (len(data) >= 8 and data[0] == ECHO_REPLY
                        and struct.unpack("!HH", data[4:8]) == (ident, seq)
                        and IPv6Address(addr[0].split("%")[0]) == dst):
                    return seq
        return 0
    finally:
        s.close()


def _checksum(src: IPv6Address, dst: IPv6Address, payload: bytes) -> int:
    """RFC 4443 2.3 / RFC 8200 8.1: ones' complement sum over the pseudo-header and message."""
    data = src.packed + dst.packed + struct.pack("!I3xB", len(payload), IPPROTO_ICMPV6) + payload
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def solicited_node(address: IPv6Address) -> IPv6Address:
    """The solicited-node multicast address of ``address`` (RFC 4291 2.7.1)."""
    return IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + IPv6Address(address).packed[13:])


def dad_solicitation(address: IPv6Address) -> bytes:
    """The complete IPv6 packet of a DAD Neighbour Solicitation for ``address`` (RFC 4861 4.3,
    RFC 4862 5.4.2): source ::, destination the solicited-node group, Hop Limit 255, no
    options."""
    target = IPv6Address(address)
    src, dst = IPv6Address("::"), solicited_node(target)
    body = struct.pack("!BBHI", NEIGHBOR_SOLICIT, 0, 0, 0) + target.packed
    body = body[:2] + struct.pack("!H", _checksum(src, dst, body)) + body[4:]
    return struct.pack("!IHBB", 6 << 28, len(body), IPPROTO_ICMPV6, 255) + src.packed \
        + dst.packed + body


def dad_probe(netns: str | None, interface: str, address: IPv6Address | str,
              timeout: float = 3.0, clock: Callable[[], float] = time.monotonic
              ) -> list[tuple[IPv6Address, int, bytes | None]]:
    """Send one DAD Neighbour Solicitation for ``address`` on ``interface`` from namespace
    ``netns`` (source ::, destination its solicited-node group, Hop Limit 255, no options) and
    collect the Neighbour Advertisements for it until ``timeout``: a list of ``(source, flags,
    target link-layer address or None)``, flags as the NA's first octet (R 0x80, S 0x40,
    O 0x20). Returns as soon as one arrived."""
    target = IPv6Address(address)
    dst = solicited_node(target)
    packet = dad_solicitation(target)
    with in_netns(netns):
        listen = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        send = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        scope = socket.if_nametoindex(interface)
    answers: list[tuple[IPv6Address, int, bytes | None]] = []
    try:
        send.sendto(packet, (str(dst), 0, 0, scope))
        deadline = clock() + scaled(timeout)
        while not answers:
            left = deadline - clock()
            if left <= 0:
                break
            ready, _, _ = select.select([listen], [], [], left)
            if not ready:
                break
            data, addr = listen.recvfrom(65535)
            if len(data) < 24 or data[0] != NEIGHBOR_ADVERT or IPv6Address(data[8:24]) != target:
                continue
            lladdr, pos = None, 24
            while pos + 2 <= len(data) and data[pos + 1]:
                if data[pos] == 2 and pos + 8 <= len(data):  # Target Link-layer Address
                    lladdr = data[pos + 2:pos + 8]
                pos += data[pos + 1] * 8
            answers.append((IPv6Address(addr[0].split("%")[0]), data[4], lladdr))
        return answers
    finally:
        listen.close()
        send.close()


def unbound_source(sender_netns: str | None, receiver_netns: str | None,
                   destination: IPv6Address | str, port: int = 49152, attempts: int = 5,
                   interval: float = 0.5) -> IPv6Address | None:
    """The source address a UDP socket that binds nothing in ``sender_netns`` uses towards
    ``destination`` (an address in ``receiver_netns``), as the receiver sees it: the kernel's
    source address selection, observed from the far end. None when nothing arrived within
    ``attempts`` datagrams ``interval`` seconds apart."""
    dst = IPv6Address(destination)
    with in_netns(receiver_netns):
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with in_netns(sender_netns):
        tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("::", port))
        for _ in range(attempts):
            tx.sendto(b"haha-lab source probe", (str(dst), port))
            ready, _, _ = select.select([rx], [], [], interval)
            if ready:
                _, sender = rx.recvfrom(2048)
                return IPv6Address(sender[0].split("%")[0])
    return None
