"""Packet capture in a lab namespace (``tcpdump``) and a small, independent look at what was seen.

:class:`Capture` runs ``tcpdump -i any -U -w FILE ip6`` inside a namespace, waits until it
listens, and on :meth:`Capture.stop` returns the IPv6 packets it wrote. :func:`read_pcap` reads
the classic pcap format (Linux cooked captures, SLL and SLL2, and Ethernet). :func:`summarise`
walks an IPv6 header chain on its own (RFC 8200 4: Hop-by-Hop 0, Routing 43, Destination
Options 60; each ``(Hdr Ext Len + 1) * 8`` octets) without haha's codec, so the tier-3 tests
check the daemons' bytes against an implementation that does not share their bugs: which upper
layer follows the extension headers, whether a Home Address option (RFC 6275 6.3, option type
201) or a type 2 routing header (RFC 6275 6.4) is present, and the ICMPv6 type.
"""

import os
import select
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address

from .timing import scaled

DLT_EN10MB = 1
DLT_LINUX_SLL = 113
DLT_LINUX_SLL2 = 276
ETH_P_IPV6 = 0x86DD

NH_HOP_BY_HOP, NH_ROUTING, NH_DEST_OPTS = 0, 43, 60
NH_IPV6, NH_ESP, NH_ICMPV6, NH_MH = 41, 50, 58, 135
OPT_HOME_ADDRESS = 201


class CaptureError(RuntimeError):
    """tcpdump could not be started or its file not read."""


def read_pcap(path: str) -> list[bytes]:
    """The IPv6 packets (bytes) of the pcap file at ``path``, in order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise CaptureError(f"{path}: not a pcap file (magic {magic.hex()})")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out = []
    offset = 24
    while offset + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        if linktype == DLT_LINUX_SLL and len(frame) >= 16:
            proto, payload = struct.unpack(">H", frame[14:16])[0], frame[16:]
        elif linktype == DLT_LINUX_SLL2 and len(frame) >= 20:
            proto, payload = struct.unpack(">H", frame[0:2])[0], frame[20:]
        elif linktype == DLT_EN10MB and len(frame) >= 14:
            proto, payload = struct.unpack(">H", frame[12:14])[0], frame[14:]
        else:
            continue
        if proto == ETH_P_IPV6 and len(payload) >= 40 and payload[0] >> 4 == 6:
            out.append(bytes(payload))
    return out


@dataclass(frozen=True)
class Seen:
    """What :func:`summarise` found in one packet."""

    src: IPv6Address
    dst: IPv6Address
    headers: tuple  # extension header numbers, in order
    upper: int  # the next header after the extension headers (50 for ESP, 135 for MH, ...)
    home_address: IPv6Address | None = None  # from a Home Address option
    routing_type2: IPv6Address | None = None  # from a type 2 routing header
    icmp_type: int | None = None
    icmp_code: int | None = None
    payload: bytes = b""


def summarise(packet: bytes) -> "Seen":
    """Walk ``packet``'s header chain (module docstring); return a :class:`Seen`."""
    src, dst = IPv6Address(packet[8:24]), IPv6Address(packet[24:40])
    nh, offset, headers = packet[6], 40, []
    hao = rh2 = None
    while nh in (NH_HOP_BY_HOP, NH_ROUTING, NH_DEST_OPTS) and offset + 8 <= len(packet):
        length = (packet[offset + 1] + 1) * 8
        body = packet[offset:offset + length]
        headers.append(nh)
        if nh == NH_DEST_OPTS:
            i = 2
            while i < len(body):
                kind = body[i]
                if kind == 0:  # Pad1
                    i += 1
                    continue
                size = body[i + 1] if i + 1 < len(body) else 0
                if kind == OPT_HOME_ADDRESS and size == 16:
                    hao = IPv6Address(body[i + 2:i + 18])
                i += 2 + size
        elif nh == NH_ROUTING and len(body) >= 24 and body[2] == 2:
            rh2 = IPv6Address(body[8:24])
        nh, offset = packet[offset], offset + length
    payload = packet[offset:]
    icmp_type = icmp_code = None
    if nh == NH_ICMPV6 and len(payload) >= 2:
        icmp_type, icmp_code = payload[0], payload[1]
    return Seen(src, dst, tuple(headers), nh, hao, rh2, icmp_type, icmp_code, bytes(payload))


class Capture:
    """``tcpdump`` in network namespace ``netns`` writing to ``path`` (module docstring)."""

    def __init__(self, netns: str, path: str | os.PathLike[str], interface: str = "any",
                 expression: Sequence[str] = ("ip6",)) -> None:
        self.netns = netns
        self.path = str(path)
        self.interface = interface
        self.expression = list(expression)
        self.process: subprocess.Popen[bytes] | None = None
        self.report = ""  # what tcpdump said when it stopped (packets captured, dropped)

    def start(self, timeout: float = 10.0) -> "Capture":
        if os.path.exists(self.path):
            os.unlink(self.path)
        # --immediate-mode: without it, packets still in the kernel's current ring block when
        # tcpdump is stopped never reach the file.
        argv = ["ip", "netns", "exec", self.netns, "tcpdump", "-i", self.interface, "-U",
                "--immediate-mode", "-n", "-s", "0", "-w", self.path] + self.expression
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = self.process.stderr
        assert stderr is not None  # a pipe, asked for above
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        seen = b""
        while b"listening on" not in seen:
            left = deadline - time.monotonic()
            if self.process.poll() is not None or left <= 0:
                self.stop()
                raise CaptureError(f"tcpdump in {self.netns} did not start: "
                                   f"{seen.decode(errors='replace')}")
            ready, _, _ = select.select([stderr], [], [], left)
            if ready:
                chunk = os.read(stderr.fileno(), 4096)
                if not chunk:
                    continue
                seen += chunk
        return self

    def stop(self) -> list[bytes]:
        """End tcpdump (it flushes its file) and return the packets it wrote. First wait for
        its file to stop growing (:func:`settle`): packets just sent may still wait in the
        kernel for tcpdump, which a loaded machine schedules late, and those waiting at
        SIGTERM are lost."""
        p, self.process = self.process, None
        if p is not None:
            if p.poll() is None:
                settle(self.path)
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=scaled(10))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stderr is not None:
                try:
                    self.report = p.stderr.read().decode(errors="replace").strip()
                finally:
                    p.stderr.close()
        return self.packets()

    def packets(self) -> list[bytes]:
        if not os.path.exists(self.path):
            return []
        return read_pcap(self.path)

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: A capture file unchanged this long (seconds, scaled) is taken as caught up.
QUIET = 0.2
#: The longest :func:`settle` waits (seconds, scaled).
SETTLE_LIMIT = 2.0


def settle(path: str, quiet: float = QUIET, limit: float = SETTLE_LIMIT,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait until ``path`` has kept its size for ``quiet`` seconds, at most ``limit`` (both
    scaled); a missing file counts as empty."""
    quiet, deadline = scaled(quiet), clock() + scaled(limit)
    size = -1
    while clock() < deadline:
        now = os.path.getsize(path) if os.path.exists(path) else 0
        if now == size:
            return
        size = now
        sleep(quiet)


__all__ = ["Capture", "CaptureError", "QUIET", "SETTLE_LIMIT", "Seen", "read_pcap", "settle",
           "summarise"]
