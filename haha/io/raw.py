"""The privileged transport: raw IPv6 out, AF_PACKET with a classic BPF filter in, nft guard.

Built for kernels with and without Mobile IPv6 support (docs/io.md):

- Outbound, every packet is complete (header chain built in user space by
  :func:`haha.wire.ipv6.build_packet`: Home Address option, type 2 routing header, ESP) and is
  written as is to one ``AF_INET6``/``SOCK_RAW``/``IPPROTO_RAW`` socket (Linux: implies
  ``IPV6_HDRINCL``). Link-local and multicast destinations need an interface: ``send``'s
  ``interface`` argument or the transport's ``default_interface``.
- Inbound, one ``AF_PACKET``/``SOCK_DGRAM``/``ETH_P_IPV6`` socket per interface (or one for all)
  carries the program of :func:`haha.io.bpf.mobility_filter`, so only Mobility Header, ESP,
  IPv6-in-IPv6 and the chosen ICMPv6 types reach Python; our own outgoing copies
  (``PACKET_OUTGOING``) are refused by the filter and again here.
- A netfilter table (``nft``) created at :meth:`RawTransport.start` and deleted at
  :meth:`RawTransport.stop` drops, in prerouting, the inbound packets haha handles in user
  space, so a kernel without ``mip6``/ESP/ip6tnl does not answer them with ICMPv6 Parameter
  Problem (and one with those modules does not process them a second time). AF_PACKET sees a
  packet before netfilter does, so haha still receives it. See :func:`nft_ruleset`.
- :meth:`RawTransport.join_anycast` makes an address (the home prefix's Home-Agents anycast
  address, RFC 6275 10.5, RFC 2526) an anycast address of the host on an interface through the
  raw socket (``IPV6_JOIN_ANYCAST``): the kernel answers Neighbour Solicitations for it and
  takes packets sent to it as local (an ICMPv6 type it does not know is dropped silently), and
  the membership ends with the socket, at :meth:`RawTransport.stop` or when the process dies.

Inbound signalling is not processed in arrival order: each readiness of a packet socket reads up
to ``read_bytes`` into the input queue (:mod:`haha.io.rxqueue`, docs/io.md "Input queues"),
where packets from configured peers come first and a node's retransmission replaces its earlier
copy still waiting; IPv6-in-IPv6 for a user-space tunnel is still handed over as it is read (at
most :data:`READ_BURST` such packets a readiness). A packet counts as a peer's when its
fixed-header source is a configured peer address *and*, for a peer with ESP keys, it is ESP
under an SPI of that peer's inbound SA (derived from the pair's secret: a stranger claiming the
peer's address does not know it).

Socket errors are logged (``twisted.logger``, structured fields) and counted, never raised.
All operating-system calls go through a :class:`haha.io.system.LinuxSystem` (or its
:class:`~haha.io.system.FakeSystem` twin).
"""

import errno as _errno
import itertools
import os
import re
import socket
import time
from collections import Counter
from ipaddress import IPv6Address
from typing import Any, Callable, Iterable, Mapping, Optional

from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from ..logging import class_logger
from ..interfaces import IAnycastJoin, IKernelTunnels, IMobilityTransport, ITunnelFastPath
from . import bpf
from .offload import (PACKET_AUXDATA, SOL_PACKET, TP_STATUS_CSUMNOTREADY, auxdata_status,
                      complete_partial_checksum)
from .rxqueue import (DEFAULT_MAX_BACKLOG, DEFAULT_MAX_PER_SOURCE, DEFAULT_SLICE_SECONDS,
                      InputQueue, esp_offset)
from .sockbuf import RXQ_OVFL_SPACE, KernelDrops, count_kernel_drops
from .system import LinuxSystem, NftError

#: Largest datagram read from a packet socket (an IPv6 packet without jumbogram).
MAX_PACKET = 65575
#: IPv6-in-IPv6 packets handed to a user-space tunnel per ``doRead`` before yielding to the
#: reactor (the data path's bound; signalling is bounded by ``read_bytes``).
READ_BURST = 64
#: Octets of signalling read per ``doRead`` into the input queue (about 1,700 Binding Updates).
READ_BYTES = 256 * 1024
#: Room for the ``PACKET_AUXDATA`` control message (``struct tpacket_auxdata``, 20 octets) and
#: the ``SO_RXQ_OVFL`` one.
AUXDATA_SPACE = socket.CMSG_SPACE(32) + RXQ_OVFL_SPACE
#: Send failures logged at most this often (seconds); the rest are only counted, so that a
#: flood (a full socket buffer under overload) costs no more than the failures themselves.
LOG_INTERVAL = 1.0
#: Destinations whose socket address :meth:`RawTransport.send_encapsulated` keeps.
SOCKADDR_CACHE = 4096
#: Upper layers dropped in netfilter when addressed to us: IPv6-in-IPv6, ESP, Mobility Header.
NFT_PROTOCOLS = (41, 50, 135)
#: The same when the kernel's own tunnels decapsulate IPv6-in-IPv6 (``netlink`` backend,
#: :meth:`RawTransport.leave_tunnels_to_kernel`): only ESP and Mobility Header.
NFT_PROTOCOLS_KERNEL_TUNNELS = (50, 135)
#: ICMPv6 types that arrive with a Home Address option (Mobile Prefix Solicitation and the
#: DHAAD/MPA replies, RFC 6275 6.5-6.8) and are dropped in netfilter when they carry one.
NFT_HAO_ICMP_TYPES = (144, 145, 146, 147)

_TABLE_RE = re.compile(r"^haha_(\d+)_\d+$")
_instances = itertools.count(1)


def table_name() -> str:
    """A netfilter table name unique to this process and instance: ``haha_<pid>_<n>``."""
    return f"haha_{os.getpid()}_{next(_instances)}"


def nft_ruleset(table: str, addresses: Optional[Iterable[IPv6Address]] = None,
                protocols: Iterable[int] = NFT_PROTOCOLS, tunnel_fragments: bool = False
                ) -> str:
    """The nft script that creates ``table`` (family ``ip6``).

    Inbound packets addressed to us (``fib daddr type local``, or only ``addresses`` when
    given) are dropped in prerouting at priority raw (-300) when they are:

    - of one of ``protocols``: IPv6-in-IPv6, ESP or Mobility Header by default, only ESP and
      Mobility Header when the kernel's tunnels must receive IPv6-in-IPv6 (``meta l4proto``
      walks the extension headers, so a Binding Update with a Home Address option is caught
      here);
    - carrying a type 2 routing header (``rt type 2``: Binding Acknowledgement, HASR to a care-of
      address);
    - a Destination Options header in front of ICMPv6 144-147 (a Mobile Prefix Solicitation
      with a Home Address option). nft cannot look inside a Destination Options header, so
      "has one" stands for "has a Home Address option" here.

    ``tunnel_fragments``: fragments of IPv6-in-IPv6 are accepted first, so that the kernel
    reassembles them for a protocol-41 raw socket (super-packets, :mod:`haha.io.superpkt`);
    and an output chain drops the ICMPv6 Port Unreachable a kernel with ``ip6_tunnel``
    sends for each reassembled one (its tunnel handler finds no tunnel of its own for it,
    after the raw socket has taken its copy): the quoted packet's Next Header, octet 14 of
    the ICMPv6 message, is 41.
    """
    if addresses is not None:
        addresses = sorted(set(addresses))
        match = "ip6 daddr @haha_local"
        elems = ", ".join(str(a) for a in addresses)
        head = "  set haha_local { type ipv6_addr; %s}\n" % (
            f"elements = {{ {elems} }}; " if addresses else "")
    else:
        match = "fib daddr type local"
        head = ""
    protos = ", ".join(str(p) for p in protocols)
    icmp = ", ".join(str(t) for t in NFT_HAO_ICMP_TYPES)
    return (
        f"table ip6 {table} {{\n"
        f"{head}"
        "  chain prerouting {\n"
        "    type filter hook prerouting priority -300; policy accept;\n"
        # TCP or UDP right after the fixed header (no extension header at all) matches no
        # rule below: let it go before the address test, a FIB look-up per rule with "fib
        # daddr type local" (most of what a home agent forwards is such a packet)
        "    ip6 nexthdr { 6, 17 } accept\n"
        + (f"    meta l4proto 41 exthdr frag exists {match} counter accept\n"
           if tunnel_fragments else "")
        + (f"    {match} meta l4proto {{ {protos} }} counter drop\n" if protos else "")
        + f"    {match} rt type 2 counter drop\n"
        f"    {match} exthdr dst exists icmpv6 type {{ {icmp} }} counter drop\n"
        "  }\n"
        + ("  chain output {\n"
           "    type filter hook output priority -300; policy accept;\n"
           "    icmpv6 type destination-unreachable icmpv6 code port-unreachable "
           "@th,112,8 41 counter drop\n"
           "  }\n" if tunnel_fragments else "")
        + "}\n"
    )


@implementer(IReadDescriptor)
class _PacketReader:
    """The reactor's view of one AF_PACKET socket."""

    def __init__(self, transport: "RawTransport", sock: Any, interface: Optional[str]) -> None:
        self._transport = transport
        self.sock = sock
        self.interface = interface
        self.drops = KernelDrops(transport.counters)

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def doRead(self) -> None:
        self._transport._read(self)

    def connectionLost(self, reason: Any) -> None:
        self._transport._lost(self, reason)

    def logPrefix(self) -> str:
        return f"RawTransport({self.interface or '*'})"


@implementer(IMobilityTransport, IAnycastJoin, IKernelTunnels, ITunnelFastPath)
class RawTransport:
    """Complete IPv6 packets over raw sockets.

    ``reactor`` provides ``addReader``/``removeReader``. ``interfaces``: names to listen on
    (``None``: all). ``addresses``: when given, only packets to these addresses (or multicast)
    pass the BPF filter and the netfilter guard; otherwise every local address counts.
    ``icmp_types``: the ICMPv6 types handed up (default RA, DHAAD, MPS/MPA); ``proxy_nd`` adds
    Neighbour Solicitation/Advertisement. ``netfilter``: install the nft guard (default True).
    ``default_interface``: used for link-local and multicast destinations when ``send`` is not
    told. ``system``: the OS seam (default :class:`LinuxSystem`). ``receive_buffer``: each
    packet socket's receive buffer in octets (0: the kernel's default; :mod:`haha.io.sockbuf`).
    ``peers``: the configured peers whose packets come first, each address mapped to the SPIs
    of its inbound SAs (``None``: no ESP with that peer, its address is all there is; module
    docstring); :meth:`set_peers` replaces them. ``read_bytes``, ``max_backlog``,
    ``max_per_source``, ``slice_seconds``, ``supersede``, ``timer``: the input queue's
    (:class:`haha.io.rxqueue.InputQueue`).

    While the receiver runs, :attr:`last_interface` names the interface the packet came in on.
    """

    log = class_logger()

    def __init__(self, reactor: Any, interfaces: Optional[Iterable[str]] = None,
                 addresses: Optional[Iterable[IPv6Address]] = None,
                 icmp_types: Iterable[int] = bpf.DEFAULT_ICMP_TYPES, proxy_nd: bool = False,
                 netfilter: bool = True, default_interface: Optional[str] = None,
                 system: Any = None, table: Optional[str] = None,
                 receive_buffer: int = 0,
                 peers: Optional[Mapping[IPv6Address, Optional[Iterable[int]]]] = None,
                 read_bytes: int = READ_BYTES, max_backlog: int = DEFAULT_MAX_BACKLOG,
                 max_per_source: int = DEFAULT_MAX_PER_SOURCE,
                 slice_seconds: float = DEFAULT_SLICE_SECONDS, supersede: bool = True,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        if isinstance(interfaces, str):
            raise TypeError("interfaces is a list of names, not one string")
        self._reactor = reactor
        self._interfaces = list(interfaces) if interfaces is not None else None
        self._addresses = self._check_addresses(addresses)
        self._icmp_types = frozenset(icmp_types) | (bpf.ND_ICMP_TYPES if proxy_nd else frozenset())
        self._netfilter = netfilter
        self._default_interface = default_interface
        self._system = system if system is not None else LinuxSystem()
        self._receive_buffer = receive_buffer
        #: The one buffer every packet is read into and copied out of at its own size.
        #: ``recvmsg(MAX_PACKET)`` made a 64 KiB object per packet and shrank it: an
        #: allocation of that size per packet, and freed fragments left between live objects
        #: in the C allocator's heap after a burst (io.md, the UDP transport's "Reading").
        self._buffer = bytearray(MAX_PACKET)
        self._buffers = [self._buffer]
        self._view = memoryview(self._buffer)
        #: Firewall mark (SO_MARK) on everything sent, set before :meth:`start`: a mobile node's
        #: tunnel steers unmarked traffic into itself (haha.backends.tun.MobileTunnel).
        self.mark: Optional[int] = None
        #: Complete TCP/UDP checksums that a sender on this machine left to "hardware"
        #: (``TP_STATUS_CSUMNOTREADY``, :mod:`haha.io.offload`) before handing a packet up.
        #: Only a test showing what goes wrong without it turns it off.
        self.complete_checksums = True
        self.table = table or table_name()
        self.counters: Counter[str] = Counter()
        self.last_interface: Optional[str] = None
        self._receiver: Optional[Callable[[bytes], Any]] = None
        self._tunnel_receiver: Optional[Callable[[bytes], Any]] = None
        self._partial_tunnel_receiver: Optional[Callable[[bytes], Any]] = None
        self._raw: Any = None
        self._readers: list[_PacketReader] = []
        self._table_installed = False
        self._ifindex: dict[str, int] = {}
        self._sockaddr: dict[bytes, tuple[str, int, int, int]] = {}
        self._send_logged_at: Optional[float] = None
        self._anycast: set[tuple[IPv6Address, str]] = set()
        self._anycast_filtered: set[IPv6Address] = set()
        self._kernel_tunnels = False
        self._kernel_esp = False  # leave_esp_to_kernel
        self._tunnel_fragments = False  # pass_tunnel_fragments
        self.program = self._program()
        if read_bytes < 1:
            raise ValueError(f"read_bytes {read_bytes!r} must be at least 1")
        self.read_bytes = read_bytes
        # A reactor without IReactorTime (a test's) gets everything processed at once.
        self.input = InputQueue(self._deliver, getattr(reactor, "callLater", None),
                                max_backlog=max_backlog, max_per_source=max_per_source,
                                slice_seconds=slice_seconds, supersede=supersede, timer=timer,
                                counters=self.counters)
        self._peers: dict[bytes, Optional[frozenset[bytes]]] = {}
        self.set_peers(peers or {})

    def set_peers(self, peers: Mapping[IPv6Address, Optional[Iterable[int]]]) -> None:
        """Replace the configured peers (the constructor's ``peers``): their packets come
        first, and none is ever superseded."""
        self._peers = {}
        for address, spis in peers.items():
            self.update_peer(address, spis)
        self.input.exempt = frozenset(self._peers)

    def update_peer(self, address: IPv6Address, spis: Optional[Iterable[int]]) -> None:
        """Add or replace one configured peer (a SIGHUP re-keyed it: :mod:`haha.reload`)."""
        if not isinstance(address, IPv6Address):
            raise TypeError(f"peer {address!r} is not an IPv6Address")
        self._peers[address.packed] = None if spis is None else frozenset(
            int(spi).to_bytes(4, "big") for spi in spis)
        self.input.exempt = frozenset(self._peers)

    @staticmethod
    def _check_addresses(addresses: Optional[Iterable[IPv6Address]]
                         ) -> Optional[frozenset[IPv6Address]]:
        if addresses is None:
            return None
        out = frozenset(addresses)
        for a in out:
            if not isinstance(a, IPv6Address):
                raise TypeError(f"address {a!r} is not an IPv6Address")
        return out

    def _program(self) -> Any:
        protocols = tuple(p for p in bpf.MOBILITY_PROTOCOLS
                          if not (self._kernel_tunnels and p == 41))
        return bpf.mobility_filter(self._icmp_types, self._addresses, protocols=protocols)

    def _ruleset(self) -> str:
        protocols: tuple[int, ...] = (NFT_PROTOCOLS_KERNEL_TUNNELS if self._kernel_tunnels
                                      else NFT_PROTOCOLS)
        if self._kernel_esp:  # ESP and MH are the kernel's (kernel ESP)
            protocols = tuple(p for p in protocols if p not in (50, 135))
        return nft_ruleset(self.table, self._addresses, protocols, self._tunnel_fragments)

    @property
    def running(self) -> bool:
        return self._receiver is not None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, receiver: Callable[[bytes], Any]) -> None:
        """Open the sockets, attach the filter, install the nft table; then deliver inbound
        packets to ``receiver(packet)``. Raises ``OSError``/:class:`NftError` when the system
        cannot do it (not root, no such interface, no nft) and leaves nothing behind."""
        if self._receiver is not None:
            raise RuntimeError("RawTransport already started")
        try:
            if self._netfilter:
                self._remove_stale_tables()
                self._system.run_nft(self._ruleset())
                self._table_installed = True
            self._raw = self._system.raw_socket()
            if self.mark:
                self._system.set_mark(self._raw, self.mark)
            for name in self._interfaces if self._interfaces is not None else [None]:
                sock = self._system.packet_socket(name)
                self._readers.append(_PacketReader(self, sock, name))
                self._system.set_receive_buffer(sock, self._receive_buffer, self.log)
                count_kernel_drops(sock)
                # Say with every packet whether its checksum was left unfinished.
                sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                self._system.attach_filter(sock, self.program)
                self._drain(sock)
        except Exception:
            self._teardown()
            raise
        self._receiver = receiver
        for r in self._readers:
            self._reactor.addReader(r)
        self.log.info("raw transport started: interfaces={interfaces} table={table}",
                      interfaces=self._interfaces or "all", table=self.table)

    def stop(self) -> None:
        """Stop receiving, close the sockets, delete the nft table. Idempotent."""
        self._receiver = None
        self.input.clear()
        for r in self._readers:
            self._reactor.removeReader(r)
        self._teardown()

    def _teardown(self) -> None:
        # Closing the raw socket ends its anycast memberships (the kernel's doing).
        self._anycast.clear()
        if self._anycast_filtered and self._addresses is not None:
            self._addresses = self._addresses - self._anycast_filtered
            self.program = self._program()
        self._anycast_filtered.clear()
        for r in self._readers:
            try:
                r.sock.close()
            except OSError:
                pass
        self._readers = []
        if self._raw is not None:
            try:
                self._raw.close()
            except OSError:
                pass
            self._raw = None
        if self._table_installed:
            self._table_installed = False
            try:
                self._system.run_nft(f"delete table ip6 {self.table}\n")
            except NftError as e:
                self.counters["nft_errors"] += 1
                self.log.error("cannot delete nft table {table}: {error}", table=self.table,
                               error=str(e))

    def _remove_stale_tables(self) -> None:
        """Delete ``haha_<pid>_<n>`` tables whose process is gone (a daemon that crashed)."""
        try:
            tables = self._system.list_nft_tables()
        except NftError as e:
            self.log.warn("cannot list nft tables: {error}", error=str(e))
            return
        for fam, name in tables:
            m = _TABLE_RE.match(name)
            if fam != "ip6" or not m or pid_alive(int(m.group(1))):
                continue
            try:
                self._system.run_nft(f"delete table ip6 {name}\n")
                self.log.info("removed stale nft table {table}", table=name)
            except NftError as e:
                self.log.warn("cannot remove stale nft table {table}: {error}", table=name,
                              error=str(e))

    def _drain(self, sock: Any) -> None:
        """Discard what was queued between socket creation and filter attachment."""
        for _ in range(10000):
            try:
                sock.recvfrom(MAX_PACKET)
            except OSError:
                return
            self.counters["drained"] += 1

    def set_addresses(self, addresses: Optional[Iterable[IPv6Address]]) -> None:
        """Replace the destination addresses the filter and the nft guard accept (e.g. a new
        care-of address); ``None`` for every local address. Errors are raised, as at start."""
        self._addresses = self._check_addresses(addresses)
        self._reinstall()

    def leave_tunnels_to_kernel(self, enabled: bool = True) -> None:
        """Let the kernel's own tunnels (``netlink`` backend: ip6tnl) receive IPv6-in-IPv6:
        the nft guard stops dropping protocol 41 (it still drops ESP and Mobility Header) and
        the BPF filter stops handing it up. ``enabled=False`` restores the default. Errors
        are raised, as at start."""
        self._kernel_tunnels = bool(enabled)
        self._reinstall()

    def set_tunnel_receiver(self, receiver: Optional[Callable[[bytes], Any]]) -> None:
        """Hand IPv6-in-IPv6 that directly follows the fixed header to ``receiver(packet)``
        (a user-space tunnel's ``decapsulate``, set by the ``tun`` backend and the mobile
        node's tunnel at start) instead of the daemon's receiver, which would only parse it
        and pass it on (counted as ``tunnelled``); ``None`` restores the default."""
        self._tunnel_receiver = receiver

    @property
    def reads_every_interface(self) -> bool:
        """One packet socket for every interface (no ``interfaces`` given): it also reads
        what a TUN hands the kernel."""
        return self._interfaces is None

    def set_partial_tunnel_receiver(self, receiver: Optional[Callable[[bytes], Any]]) -> None:
        """Hand IPv6-in-IPv6 whose inner TCP/UDP checksum the sender left partial
        (``TP_STATUS_CSUMNOTREADY``) to ``receiver(packet)`` uncompleted, instead of
        completing it and handing it to the tunnel receiver (a user-space tunnel with an
        offloaded TUN lets the kernel behind it finish it: docs/io.md "Partial checksums left
        to the kernel"); only while a tunnel receiver is set. ``None`` restores completion."""
        self._partial_tunnel_receiver = receiver

    def leave_esp_to_kernel(self, enabled: bool = True) -> None:
        """Let the kernel's IPsec receive ESP and the Mobility Header it decrypts
        (``[security] mode = kernel-xfrm`` or ``external``): the nft guard stops dropping
        protocols 50 and 135; the packet socket still hands them up (ESP is watched for peers'
        boot epochs, :mod:`haha.security.kerneldaemon`). Errors are raised, as at start."""
        self._kernel_esp = bool(enabled)
        self._reinstall()

    def pass_tunnel_fragments(self, enabled: bool = True) -> None:
        """Let fragments of IPv6-in-IPv6 addressed to us through the nft guard, so that the
        kernel reassembles them for a protocol-41 raw socket (the user-space tunnels'
        super-packets, :mod:`haha.io.superpkt`); the packet socket's filter never hands
        fragments up, so nothing arrives twice. Needs the guard (without it every tunnel
        packet would reach both sockets): ``RuntimeError`` otherwise. Errors are raised, as
        at start."""
        if enabled and not self._netfilter:
            raise RuntimeError("super-packets need the raw transport's netfilter guard "
                               "(netfilter = yes)")
        self._tunnel_fragments = bool(enabled)
        self._reinstall()

    @property
    def kernel_tunnels(self) -> bool:
        """True while IPv6-in-IPv6 is left to the kernel (:meth:`leave_tunnels_to_kernel`)."""
        return self._kernel_tunnels

    def _reinstall(self) -> None:
        """Attach the current filter program and replace the nft table (one nft transaction)."""
        self.program = self._program()
        for r in self._readers:
            self._system.attach_filter(r.sock, self.program)
        if self._table_installed:
            self._system.run_nft(f"delete table ip6 {self.table}\n" + self._ruleset())

    # -- anycast ----------------------------------------------------------------------------

    @property
    def anycast(self) -> frozenset[tuple[IPv6Address, str]]:
        """The ``(address, interface)`` anycast memberships held now."""
        return frozenset(self._anycast)

    def join_anycast(self, address: IPv6Address, interface: str) -> None:
        """Join anycast ``address`` on ``interface`` until :meth:`stop` (module docstring).
        Joining again is a no-op. When the transport filters by ``addresses``, the address is
        added to them. Raises ``RuntimeError`` before start, ``TypeError`` for a bad argument
        and the kernel's ``OSError`` (counted as ``anycast_errors``) when it refuses, changing
        nothing."""
        if not isinstance(address, IPv6Address):
            raise TypeError(f"anycast address {address!r} is not an IPv6Address")
        if not isinstance(interface, str) or not interface:
            raise TypeError(f"anycast interface {interface!r} is not an interface name")
        if self._raw is None:
            raise RuntimeError("join_anycast needs a started RawTransport")
        if (address, interface) in self._anycast:
            return
        try:
            self._system.join_anycast(self._raw, address, interface)
        except OSError as e:
            self.counters["anycast_errors"] += 1
            self.log.error("cannot join anycast {address} on {interface}: {error}",
                           address=str(address), interface=interface, error=str(e))
            raise
        self._anycast.add((address, interface))
        if self._addresses is not None and address not in self._addresses:
            self._anycast_filtered.add(address)
            self.set_addresses(self._addresses | {address})
        self.counters["anycast_joined"] += 1
        self.log.info("joined anycast {address} on {interface}", address=str(address),
                      interface=interface)

    def leave_anycast(self, address: IPv6Address, interface: str) -> None:
        """Leave what :meth:`join_anycast` joined (no-op when not joined)."""
        if (address, interface) not in self._anycast:
            return
        self._anycast.discard((address, interface))
        try:
            self._system.leave_anycast(self._raw, address, interface)
        except OSError as e:
            self.counters["anycast_errors"] += 1
            self.log.warn("cannot leave anycast {address} on {interface}: {error}",
                          address=str(address), interface=interface, error=str(e))
        if address in self._anycast_filtered and not any(a == address for a, _ in self._anycast):
            self._anycast_filtered.discard(address)
            self.set_addresses((self._addresses or frozenset()) - {address})

    # -- inbound ----------------------------------------------------------------------------

    def _read(self, reader: _PacketReader) -> None:
        """One readiness: up to ``read_bytes`` of signalling into the input queue (and at most
        :data:`READ_BURST` tunnelled packets handed over), then the queue's turn."""
        read = tunnelled = 0
        buffers, view = self._buffers, self._view
        while read < self.read_bytes and tunnelled < READ_BURST:
            if self._receiver is None:
                return
            try:
                n, anc, _, addr = reader.sock.recvmsg_into(buffers, AUXDATA_SPACE)
                data = bytes(view[:n])  # a copy of its own size (see ``_buffer``)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                self.counters["receive_errors"] += 1
                self.log.warn("receive error on {interface}: {error}",
                              interface=reader.interface or "*", error=str(e),
                              errno=_errno.errorcode.get(e.errno or 0, e.errno))
                break
            read += len(data)
            if len(anc) > 1:  # PACKET_AUXDATA always; SO_RXQ_OVFL once the kernel dropped
                reader.drops.seen(anc)
            if addr[2] == bpf.PACKET_OUTGOING:
                self.counters["ignored_outgoing"] += 1
                continue
            if len(data) < 40 or data[0] >> 4 != 6:
                self.counters["received_malformed"] += 1
                continue
            tunnel = self._tunnel_receiver
            if anc and auxdata_status(anc) & TP_STATUS_CSUMNOTREADY:
                self.counters["checksum_partial"] += 1
                partial = self._partial_tunnel_receiver
                if partial is not None and tunnel is not None and data[6] == 41:
                    tunnel = partial  # left to the kernel behind the tunnel's TUN
                    self.counters["checksum_left_partial"] += 1
                elif self.complete_checksums:
                    data = self._complete(data)
            self.counters["received"] += 1
            if tunnel is not None and data[6] == 41:
                self.counters["tunnelled"] += 1
                tunnelled += 1
                try:
                    tunnel(data)
                except Exception:
                    self.counters["receiver_errors"] += 1
                    self.log.failure("tunnel receiver failed on a packet from {interface}",
                                     interface=addr[0])
                continue
            if self._is_peer(data):
                self.input.put_peer(data, addr[0])
            else:
                self.input.put(data, addr[0])
        if self._receiver is not None:
            self.input.run()

    def _is_peer(self, data: bytes) -> bool:
        """Whether ``data`` comes from a configured peer (module docstring)."""
        peers = self._peers
        if not peers:
            return False
        source = data[8:24]
        if source not in peers:
            return False
        spis = peers[source]
        if spis is None:
            return True
        off = esp_offset(data)
        return off >= 0 and data[off:off + 4] in spis

    def _deliver(self, data: bytes, interface: Optional[str]) -> None:
        """Hand one queued packet to the receiver, naming its interface meanwhile."""
        receiver = self._receiver
        if receiver is None:
            return
        self.last_interface = interface
        try:
            receiver(data)
        except Exception:
            self.counters["receiver_errors"] += 1
            self.log.failure("receiver failed on a packet from {interface}",
                             interface=interface)
        finally:
            self.last_interface = None

    def _complete(self, data: bytes) -> bytes:
        """``data`` with the TCP/UDP checksum the sender left to hardware completed
        (``checksum_completed``); unchanged when it has no TCP/UDP header to complete
        (``checksum_unfinished``: ESP, MH and ICMPv6 are always summed in software, so this
        is a packet nobody can deliver intact)."""
        done = complete_partial_checksum(data)
        if done is None:
            self.counters["checksum_unfinished"] += 1
            return data
        self.counters["checksum_completed"] += 1
        return done

    def _lost(self, reader: _PacketReader, reason: Any) -> None:
        self.counters["receive_errors"] += 1
        self.log.error("packet socket on {interface} lost: {reason}",
                       interface=reader.interface or "*", reason=reason.getErrorMessage())

    # -- outbound ---------------------------------------------------------------------------

    def send(self, packet: bytes, interface: Optional[str] = None) -> None:
        """Write one complete IPv6 packet. Never raises for network errors: they are counted
        (``send_errors`` and ``send_error.<ERRNO>``) and logged."""
        if self._raw is None:
            self.counters["send_not_started"] += 1
            return
        if len(packet) < 40 or packet[0] >> 4 != 6:
            self.counters["send_invalid"] += 1
            self.log.warn("refusing to send {length} octets that are not an IPv6 packet",
                          length=len(packet))
            return
        dst = IPv6Address(bytes(packet[24:40]))
        scope = 0
        if dst.is_multicast or dst.is_link_local:
            name = interface or self._default_interface
            if name is None:
                self.counters["send_no_interface"] += 1
                self.log.warn("no interface for link-scope destination {destination}",
                              destination=str(dst))
                return
            try:
                scope = self._ifindex.get(name) or self._system.interface_index(name)
                self._ifindex[name] = scope
            except OSError as e:
                self.counters["send_errors"] += 1
                self.log.warn("no interface {interface}: {error}", interface=name, error=str(e))
                return
        try:
            self._raw.sendto(packet, (str(dst), 0, 0, scope))
        except OSError as e:
            self._send_failed(e, dst, len(packet))
            return
        self.counters["sent"] += 1

    def send_encapsulated(self, header: bytes, payload: "bytes | memoryview") -> None:
        """Send the packet made of the 40-octet IPv6 ``header`` and ``payload`` (the
        tunnel's data path: the two are gathered by the kernel, not copied into one here).
        Errors as :meth:`send`."""
        if self._raw is None:
            self.counters["send_not_started"] += 1
            return
        key = header[24:40]
        address = self._sockaddr.get(key)
        if address is None:
            if len(header) != 40 or header[0] >> 4 != 6 or key[0] == 0xFF or (
                    key[0] == 0xFE and key[1] & 0xC0 == 0x80):
                self.send(bytes(header) + bytes(payload))  # checked, or sent with a scope
                return
            if len(self._sockaddr) >= SOCKADDR_CACHE:
                self._sockaddr.clear()
            address = self._sockaddr[key] = (str(IPv6Address(key)), 0, 0, 0)
        try:
            self._raw.sendmsg((header, payload), (), 0, address)
        except OSError as e:
            self._send_failed(e, address[0], 40 + len(payload))
            return
        self.counters["sent"] += 1

    def _send_failed(self, e: OSError, destination: object, length: int) -> None:
        """Count a send failure; log it unless one was logged less than LOG_INTERVAL ago."""
        name = _errno.errorcode.get(e.errno or 0, str(e.errno))
        self.counters["send_errors"] += 1
        self.counters[f"send_error.{name}"] += 1
        seconds = getattr(self._reactor, "seconds", None)
        now = seconds() if seconds is not None else None
        if now is not None and self._send_logged_at is not None and \
                now - self._send_logged_at < LOG_INTERVAL:
            return
        self._send_logged_at = now
        self.log.warn("send to {destination} failed: {error} ({count} failures so far)",
                      destination=str(destination), error=str(e), errno=name, length=length,
                      count=self.counters["send_errors"])


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
