"""ICMPv6 echo (RFC 4443 4.1, 4.2) from inside a network namespace, without the ``ping`` binary.

Minimal machines (and this project's CI) may lack iputils; the lab only needs "did an echo
reply come back before the deadline". :func:`ping` blocks its thread (the lab and the tests run
it in a worker thread when a reactor must keep turning); the socket is created inside the
namespace, so the whole exchange happens there.
"""

import os
import select
import socket
import struct
import time
from ipaddress import IPv6Address

from ..io.system import in_netns

ECHO_REQUEST = 128
ECHO_REPLY = 129


def ping(netns, destination, source=None, attempts=5, interval=0.5, interface=None,
         clock=time.monotonic):
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
            deadline = clock() + interval
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
