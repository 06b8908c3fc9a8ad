"""The operating-system seam of :mod:`haha.io` (docs/io.md): every socket, TUN and nft call.

:class:`LinuxSystem` does the real calls, optionally inside a named network namespace (a socket,
a TUN device or a netlink socket stays in the namespace it was created in, so one process can
drive several namespaces: the tier-3 tests do). :class:`FakeSystem` is its in-memory twin for
unit tests and embedders: its packet sockets run the attached classic BPF program through
:func:`haha.io.bpf.run`, as the kernel would.

Objects returned by both look like sockets (``fileno``, ``recvfrom``, ``sendto``, ``close``) or,
for TUN, like a file descriptor (``fileno``, ``read``, ``write``, ``close``); reads raise
:class:`BlockingIOError` when nothing is queued.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import subprocess
from contextlib import contextmanager
from ipaddress import IPv6Address
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from zope.interface import implementer

from ..interfaces import IPacketSocket, IRawSocket, ISystem, ITunFile
from . import bpf
from .sockbuf import apply_buffers

ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_MARK = getattr(socket, "SO_MARK", 36)
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: ``<linux/if_tun.h>``: a ``struct virtio_net_hdr`` in front of every packet read and written,
#: and the offloads user space accepts (``TUNSETOFFLOAD``): partial checksums, TCPv6 GSO.
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO6 = 0x04
IFNAMSIZ = 16
#: ``<linux/in6.h>``: join/leave an IPv6 anycast address (``struct ipv6_mreq``: the address and
#: an interface index). Python's socket module does not name them.
IPV6_JOIN_ANYCAST = 27
IPV6_LEAVE_ANYCAST = 28


class NftError(RuntimeError):
    """The ``nft`` command failed; the message carries its standard error."""


_libc = None


#: The buffers of one packet written with ``writev``/``sendmsg`` (a header and the packet).
Buffers = Sequence[Union[bytes, bytearray, memoryview]]
#: An AF_PACKET socket address: ``(interface, protocol, packet type, hardware type, address)``.
PacketAddress = Tuple[str, int, int, int, bytes]


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextmanager
def in_netns(name: Optional[str]) -> Iterator[None]:
    """Run the body with the calling thread in network namespace ``name`` (``/run/netns/NAME``,
    as ``ip netns add`` makes it); ``None`` means stay where we are."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(own)
        raise
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def _mreq(address: IPv6Address, ifindex: int) -> bytes:
    """``struct ipv6_mreq { struct in6_addr ipv6mr_multiaddr; int ipv6mr_interface; }``."""
    return address.packed + struct.pack("@i", ifindex)


@implementer(ITunFile)
class _Fd:
    """A non-blocking file descriptor with ``read``/``write`` (a TUN queue)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def read(self, n: int) -> bytes:
        return os.read(self._fd, n)

    def write(self, data: bytes) -> int:
        return os.write(self._fd, data)

    def writev(self, buffers: Buffers) -> int:
        """One packet from several buffers (a virtio_net_hdr and the packet, uncopied)."""
        return os.writev(self._fd, buffers)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@implementer(ISystem)
class LinuxSystem:
    """Real sockets, TUN and nft, in namespace ``netns`` (``None``: the current one)."""

    def __init__(self, netns: Optional[str] = None) -> None:
        self.netns = netns

    def packet_socket(self, interface: Optional[str] = None) -> socket.socket:
        """A non-blocking ``AF_PACKET``/``SOCK_DGRAM`` socket for IPv6 on ``interface`` (all
        interfaces when ``None``)."""
        with in_netns(self.netns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK,
                              socket.htons(ETH_P_IPV6))
            try:
                if interface is not None:
                    s.bind((interface, ETH_P_IPV6))
            except OSError:
                s.close()
                raise
        return s

    def set_receive_buffer(self, sock: Any, size: int, log: Any) -> Optional[int]:
        """Ask for a ``size``-octet receive buffer on ``sock`` (:mod:`haha.io.sockbuf`); returns
        the size granted (None for 0: the kernel's default)."""
        return apply_buffers(sock, log, "packet socket", receive=size)["receive"]

    def attach_filter(self, sock: Any, program: Any) -> None:
        """``SO_ATTACH_FILTER`` with a ``struct sock_fprog { u16 len; sock_filter *filter; }``."""
        code = bpf.pack(program)
        buf = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def raw_socket(self) -> socket.socket:
        """A non-blocking ``AF_INET6``/``SOCK_RAW``/``IPPROTO_RAW`` socket: on Linux it implies
        ``IPV6_HDRINCL``, so what we write is the whole IPv6 packet."""
        with in_netns(self.netns):
            return socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                 socket.IPPROTO_RAW)

    def set_mark(self, sock: Any, mark: int) -> None:
        """``SO_MARK``: packets sent through ``sock`` carry firewall mark ``mark`` (policy
        rules can tell them apart; CAP_NET_ADMIN)."""
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)

    def interface_index(self, name: str) -> int:
        with in_netns(self.netns):
            return socket.if_nametoindex(name)

    def join_anycast(self, sock: Any, address: IPv6Address, interface: str) -> None:
        """Make ``address`` an anycast address of this host on ``interface`` for as long as
        ``sock`` (any ``AF_INET6`` socket) stays open: ``IPV6_JOIN_ANYCAST`` with an
        ``ipv6_mreq``. The kernel then answers Neighbour Solicitations for it on that link
        (Override flag clear, so several members can coexist) and delivers packets sent to it
        locally; closing the socket, even by the process dying, leaves it. Linux refuses
        (``OSError``) without CAP_NET_ADMIN (EPERM), for a multicast address or one already
        assigned as unicast (EINVAL), an unknown interface (ENODEV), or an interface that
        neither forwards IPv6 nor has a prefix covering the address (EADDRNOTAVAIL)."""
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_JOIN_ANYCAST,
                        _mreq(address, self.interface_index(interface)))

    def leave_anycast(self, sock: Any, address: IPv6Address, interface: str) -> None:
        """Undo :meth:`join_anycast` (ENOENT when ``sock`` had not joined it)."""
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_LEAVE_ANYCAST,
                        _mreq(address, self.interface_index(interface)))

    def run_nft(self, script: str) -> str:
        """Feed ``script`` to ``nft -f -``; raise :class:`NftError` with its complaint."""
        argv = ["nft", "-f", "-"]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns] + argv
        try:
            r = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            raise NftError(f"cannot run {' '.join(argv)}: {e}") from None
        if r.returncode:
            raise NftError(f"nft failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def list_nft_tables(self) -> List[Tuple[str, str]]:
        """``[(family, name)]`` of the tables that exist now."""
        argv = ["nft", "list", "tables"]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns] + argv
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            raise NftError(f"cannot run {' '.join(argv)}: {e}") from None
        if r.returncode:
            raise NftError(f"nft failed ({r.returncode}): {r.stderr.strip()}")
        out = []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "table":
                out.append((parts[1], parts[2]))
        return out

    def open_tun(self, name: str, vnet_hdr: bool = False) -> Tuple[_Fd, str]:
        """Create or attach TUN device ``name`` (``IFF_TUN | IFF_NO_PI``: whole IP packets, no
        packet-information prefix; ``vnet_hdr``: with ``IFF_VNET_HDR``, a virtio_net_hdr in
        front of each); return ``(fd_object, actual_name)``."""
        if len(name.encode()) >= IFNAMSIZ:
            raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} octets")
        with in_netns(self.netns):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
            ifr = struct.pack("16sH22x", name.encode(), flags)
            with in_netns(self.netns):
                res = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            os.close(fd)
            hint = " (another process holds it: give each daemon its own device name, or " \
                "a pattern such as haha%d)" if e.errno == errno.EBUSY else ""
            raise OSError(e.errno, f"{e.strerror}{hint}", f"TUN device {name}") from None
        actual = res[:IFNAMSIZ].rstrip(b"\0").decode()
        return _Fd(fd), actual

    def set_tun_offload(self, tun: Any, flags: int) -> None:
        """``TUNSETOFFLOAD``: the offloads (``TUN_F_*``) user space accepts on reads from a
        TUN opened with ``vnet_hdr``."""
        fcntl.ioctl(tun.fileno(), TUNSETOFFLOAD, flags)


# --- in-memory twin ---------------------------------------------------------------------------


@implementer(IPacketSocket)
class FakePacketSocket:
    """An AF_PACKET socket in memory. :meth:`inject` plays the kernel: it runs the attached
    filter (when there is one) and queues what passes."""

    def __init__(self, interface: Optional[str]) -> None:
        self.interface = interface
        self.filter: Any = None  # the program attached through FakeSystem.attach_filter
        # (data, address[, auxdata status]) in arrival order
        self.queue: List[Tuple[Any, ...]] = []
        self.closed = False
        self.receive_buffer: Optional[int] = None  # the size asked for (set_receive_buffer)
        self.fail_with: Optional[int] = None  # an errno to raise from the next recvfrom
        self.options: Dict[Tuple[int, int], Any] = {}  # (level, option) -> value, setsockopt
        self._status = 0

    def fileno(self) -> int:
        return -1

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self.options[(level, option)] = value

    def inject(self, data: bytes, pkttype: int = bpf.PACKET_HOST,
               interface: Optional[str] = None, status: int = 0) -> bool:
        """Deliver ``data`` as the kernel would; True when the filter let it through.
        ``status``: the ``tp_status`` of its ``PACKET_AUXDATA`` (e.g. checksum not ready)."""
        if self.filter is not None and not bpf.run(self.filter, data, pkttype):
            return False
        self.queue.append((bytes(data), (interface or self.interface or "eth0", ETH_P_IPV6,
                                         pkttype, 1, b"\x02\x00\x00\x00\x00\x01"), status))
        return True

    def recvmsg(self, n: int, ancbufsize: int = 0
                ) -> Tuple[bytes, List[Tuple[int, int, bytes]], int, PacketAddress]:
        """As ``recvfrom``, with the ``PACKET_AUXDATA`` control message when enabled."""
        data, addr = self.recvfrom(n)
        status = self._status
        anc: List[Tuple[int, int, bytes]] = []
        if self.options.get((263, 8)) and ancbufsize:  # SOL_PACKET, PACKET_AUXDATA
            anc.append((263, 8, struct.pack("=IIIHHHH", status, len(data), len(data),
                                             0, 0, 0, 0)))
        return data, anc, 0, addr

    def recvmsg_into(self, buffers: List[Any], ancbufsize: int = 0
                     ) -> Tuple[int, List[Tuple[int, int, bytes]], int, PacketAddress]:
        """As ``recvmsg``, written into ``buffers`` in order; MSG_TRUNC when they were short."""
        data, anc, _, addr = self.recvmsg(sum(len(b) for b in buffers) + 1, ancbufsize)
        written = 0
        for b in buffers:
            part = data[written:written + len(b)]
            memoryview(b)[:len(part)] = part
            written += len(part)
        return written, anc, socket.MSG_TRUNC if written < len(data) else 0, addr

    def recvfrom(self, n: int) -> Tuple[bytes, PacketAddress]:
        if self.fail_with is not None:
            e, self.fail_with = self.fail_with, None
            raise OSError(e, os.strerror(e))
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")
        entry = self.queue.pop(0)  # (data, address[, auxdata status])
        data, addr = entry[0], entry[1]
        self._status = entry[2] if len(entry) > 2 else 0
        return data[:n], addr

    def close(self) -> None:
        self.closed = True


@implementer(IRawSocket)
class FakeRawSocket:
    """A raw IPv6 socket in memory: ``sent`` lists ``(packet, address)``; ``fail_with`` makes
    every send raise that errno until cleared; ``anycast`` holds the ``(address, interface)``
    memberships joined through it (the kernel forgets them when the socket closes)."""

    def __init__(self) -> None:
        self.sent: List[Tuple[bytes, Any]] = []
        self.fail_with: Optional[int] = None
        self.closed = False
        self.anycast: Set[Tuple[IPv6Address, str]] = set()
        self.mark: Optional[int] = None  # SO_MARK, set through FakeSystem.set_mark

    def fileno(self) -> int:
        return -1

    def sendto(self, data: bytes, address: Any) -> int:
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        self.sent.append((bytes(data), address))
        return len(data)

    def sendmsg(self, buffers: Buffers, ancdata: Sequence[Any] = (), flags: int = 0,
                address: Any = None) -> int:
        return self.sendto(b"".join(bytes(b) for b in buffers), address)

    def close(self) -> None:
        self.closed = True
        self.anycast.clear()


@implementer(ITunFile)
class FakeTunFile:
    """A TUN queue in memory: :meth:`inject` is a packet the kernel routed into the device,
    ``written`` what user space wrote to it."""

    def __init__(self, name: str, vnet_hdr: bool = False) -> None:
        self.name = name
        self.queue: List[bytes] = []
        self.written: List[bytes] = []
        self.closed = False
        self.fail_with: Optional[int] = None
        #: Opened with IFF_VNET_HDR: reads carry a virtio_net_hdr (``inject``'s ``vnet``, or
        #: none asked), writes must (kept in ``written_vnet``, the packets in ``written``).
        self.vnet_hdr = vnet_hdr
        self.written_vnet: List[bytes] = []
        self.offload = 0  # TUNSETOFFLOAD flags

    def fileno(self) -> int:
        return -1

    def inject(self, packet: bytes, vnet: Optional[bytes] = None) -> None:
        if self.vnet_hdr:
            packet = (vnet if vnet is not None else bytes(10)) + bytes(packet)
        self.queue.append(bytes(packet))

    def read(self, n: int) -> bytes:
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "nothing queued")
        return self.queue.pop(0)[:n]

    def write(self, data: bytes) -> int:
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        data = bytes(data)
        if self.vnet_hdr:
            if len(data) < 10:
                raise OSError(errno.EINVAL, "shorter than a virtio_net_hdr")
            self.written_vnet.append(data[:10])
            data = data[10:]
        self.written.append(data)
        return len(data)

    def writev(self, buffers: Buffers) -> int:
        if self.fail_with is not None:
            raise OSError(self.fail_with, os.strerror(self.fail_with))
        if self.vnet_hdr and len(buffers) == 2 and len(buffers[0]) == 10:
            # the virtio_net_hdr and the packet, as TunDevice writes them (one copy, as write)
            self.written_vnet.append(bytes(buffers[0]))
            self.written.append(bytes(buffers[1]))
            return 10 + len(buffers[1])
        return self.write(b"".join(bytes(b) for b in buffers))

    def close(self) -> None:
        self.closed = True


@implementer(ISystem)
class FakeSystem:
    """The in-memory :class:`LinuxSystem`: records sockets, TUN devices and nft scripts."""

    def __init__(self, interfaces: Optional[Dict[str, int]] = None) -> None:
        self.interfaces = dict(interfaces or {"lo": 1, "eth0": 2})
        self.packet_sockets: List[FakePacketSocket] = []
        self.raw_sockets: List[FakeRawSocket] = []
        self.tuns: Dict[str, FakeTunFile] = {}
        self.nft_scripts: List[str] = []
        self.nft_tables: Set[Tuple[str, str]] = set()
        self.nft_fail: Optional[str] = None  # a message: every nft call fails with it
        self.anycast_fail: Optional[int] = None  # an errno: every anycast join fails with it

    def packet_socket(self, interface: Optional[str] = None) -> FakePacketSocket:
        if interface is not None and interface not in self.interfaces:
            raise OSError(errno.ENODEV, f"no such device {interface}")
        s = FakePacketSocket(interface)
        self.packet_sockets.append(s)
        return s

    def set_receive_buffer(self, sock: Any, size: int, log: Any) -> Optional[int]:
        sock.receive_buffer = size or None
        return sock.receive_buffer

    def attach_filter(self, sock: Any, program: Any) -> None:
        bpf.pack(program)  # what the kernel would be handed must encode
        sock.filter = tuple(program)

    def raw_socket(self) -> FakeRawSocket:
        s = FakeRawSocket()
        self.raw_sockets.append(s)
        return s

    def set_mark(self, sock: Any, mark: int) -> None:
        sock.mark = mark

    def interface_index(self, name: str) -> int:
        try:
            return self.interfaces[name]
        except KeyError:
            raise OSError(errno.ENODEV, f"no such device {name}") from None

    def join_anycast(self, sock: Any, address: IPv6Address, interface: str) -> None:
        """As the kernel: EINVAL for a multicast address, ENODEV for an unknown interface."""
        if self.anycast_fail is not None:
            raise OSError(self.anycast_fail, os.strerror(self.anycast_fail))
        if sock.closed:
            raise OSError(errno.EBADF, "socket closed")
        if address.is_multicast:
            raise OSError(errno.EINVAL, "multicast address")
        self.interface_index(interface)
        sock.anycast.add((address, interface))

    def leave_anycast(self, sock: Any, address: IPv6Address, interface: str) -> None:
        if (address, interface) not in sock.anycast:
            raise OSError(errno.ENOENT, "not joined")
        sock.anycast.discard((address, interface))

    def anycast(self) -> Set[Tuple[IPv6Address, str]]:
        """Every ``(address, interface)`` joined through an open raw socket (the kernel's
        /proc/net/anycast6, in memory)."""
        return {m for s in self.raw_sockets if not s.closed for m in s.anycast}

    def run_nft(self, script: str) -> str:
        if self.nft_fail:
            raise NftError(self.nft_fail)
        self.nft_scripts.append(script)
        for line in script.splitlines():
            words = line.split()
            if words[:2] == ["add", "table"] and len(words) >= 4:
                self.nft_tables.add((words[2], words[3]))
            elif words[:1] == ["table"] and len(words) >= 3:
                self.nft_tables.add((words[1], words[2].rstrip("{")))
            elif words[:2] == ["delete", "table"] and len(words) >= 4:
                if (words[2], words[3]) not in self.nft_tables:
                    raise NftError(f"No such file or directory: table {words[3]}")
                self.nft_tables.discard((words[2], words[3]))
        return ""

    def list_nft_tables(self) -> List[Tuple[str, str]]:
        return sorted(self.nft_tables)

    def open_tun(self, name: str, vnet_hdr: bool = False) -> Tuple[FakeTunFile, str]:
        if len(name.encode()) >= IFNAMSIZ:
            raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} octets")
        if "%d" in name:
            n = 0
            while name.replace("%d", str(n)) in self.tuns:
                n += 1
            name = name.replace("%d", str(n))
        f = FakeTunFile(name, vnet_hdr)
        self.tuns[name] = f
        self.interfaces.setdefault(name, max(self.interfaces.values(), default=0) + 1)
        return f, name

    def set_tun_offload(self, tun: FakeTunFile, flags: int) -> None:
        if not tun.vnet_hdr:
            raise OSError(errno.EINVAL, "TUNSETOFFLOAD without IFF_VNET_HDR")
        tun.offload = flags
