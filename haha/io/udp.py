"""The unprivileged development transport: IPv6 packets carried in UDP datagrams.

Framing: one UDP datagram holds exactly one complete IPv6 packet (fixed header, extension
headers, upper layer) and nothing else: no prefix, no trailer. A datagram that does not start
with version 6 or is shorter than 40 octets is counted and dropped.

Where a packet goes is decided by its fixed-header destination address (for a packet with a
type 2 routing header that is the care-of address, as on a real network):

1. the static map from the configuration, ``IPv6Address -> (host, port)``;
2. otherwise what was learned: every arriving packet teaches "its fixed-header source (the
   care-of address for a mobile node; never the Home Address option's address) is reachable at
   the datagram's UDP endpoint", so a home agent can answer a mobile node whose care-of address
   it did not know. Learning never overrides a static entry and keeps at most ``max_learned``
   entries (least recently learned forgotten first). A source that a prefix entry (3.) already
   sends to the endpoint it came from is not learned (an entry learned for it before is
   forgotten): it would route the same, and a load generator's 100,000 nodes behind one
   prefix would otherwise hold about 300 octets each;
3. otherwise the static map's prefixes, ``IPv6Network -> (host, port)``, longest first: a load
   generator running thousands of mobile nodes behind one UDP port declares their care-of
   prefix once, so a home agent that never heard from a node (a survivor taking it over) can
   still reach it;
4. a multicast destination goes to every distinct static endpoint of an address (not of a
   prefix);
5. anything else is counted (``no_route``) and dropped.

Peers first and superseded packets (:mod:`haha.io.rxqueue`, docs/io.md "Input queues"): each
time the socket is readable the transport reads up to ``read_bytes`` (256 KiB, about 2,200
Binding Updates; cheap: a ``recvmsg`` and a look-up each) without processing it, and puts it in
the input queue: packets from a static peer (an address entry of the map, arriving from that
entry's own UDP endpoint) in the peers' queue, the rest in the other, where a node's
retransmission replaces its earlier copy still waiting (same source address, SPI, length and UDP
endpoint). The peers' queue is processed at once, the rest in slices of ``slice_seconds``
between which the reactor runs. A packet handed to the protocol outside a socket read (tests
driving it directly) is processed at once, as before.

Each distinct UDP endpoint is kept as one ``(host, port)`` tuple, shared by the packets waiting
in the input queue and the learned entries (a datagram read brings a new tuple, host text and
port number of its own: about 140 octets for every packet waiting in a burst).

Reading. Every datagram is read into one buffer of ``MAX_DATAGRAM`` octets kept by the
transport (``recvmsg_into``) and copied out at its own size. ``recvmsg`` makes a new
8 KiB object per datagram and shrinks it to the datagram's size: the C allocator split each
such block, and a burst of 30,000 registrations left about 9 MB of freed fragments in the
heap between live objects, in the resident memory for good (about 300 octets per node:
``haha-ctl memory``'s ``malloc.free_held``). Read this way a datagram of signalling size comes
from Python's small-object allocator, and the copy costs about 0.3 us per datagram.

Kernel drops. The socket has ``SO_RXQ_OVFL`` on: every datagram read carries the number of
datagrams the kernel has dropped on the socket so far for want of room in its receive buffer,
kept as the counter ``kernel_drops`` (drops are seen with the next datagram queued after them).
"""

import errno as _errno
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import LogLevel
from zope.interface import implementer

from ..interfaces import IMobilityTransport
from ..logging import class_logger, enabled
from .rxqueue import (DEFAULT_MAX_BACKLOG, DEFAULT_MAX_PER_SOURCE, DEFAULT_SLICE_SECONDS,
                      InputQueue)
from .sockbuf import RXQ_OVFL_SPACE, KernelDrops, apply_buffers, count_kernel_drops

#: A UDP endpoint: (host, port).
Endpoint = tuple[str, int]
#: Largest datagram read (as Twisted's default ``maxPacketSize``).
MAX_DATAGRAM = 8192
#: The unspecified address's 16 octets (never learned).
_UNSPECIFIED = bytes(16)
#: At most this many distinct endpoints are kept shared (module docstring); past it the table
#: starts afresh (entries already made keep their tuples).
MAX_SHARED_ENDPOINTS = 4096


class _Protocol(DatagramProtocol):
    def __init__(self, transport: "UdpTransport") -> None:
        self._owner = transport

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        # Only a datagram handed over outside the transport's own reads (UdpTransport._read
        # queues what it reads itself): processed at once.
        self._owner._received(data, addr)


@implementer(IMobilityTransport)
class UdpTransport:
    """IPv6-in-UDP between loopback ports (see the module docstring for the framing).

    ``reactor`` provides ``listenUDP``. ``port``/``interface``: where to listen (port 0 picks
    one; :attr:`address` tells which after :meth:`start`). ``peers``: the static map (keys
    ``IPv6Address`` or ``IPv6Network``).
    ``learn``: learn sources as described above, at most ``max_learned`` of them.
    ``receive_buffer``/``send_buffer``: socket buffer sizes in octets (0: the kernel's default;
    see :mod:`haha.io.sockbuf`); :attr:`buffers` tells what was granted after :meth:`start`.
    ``read_bytes``: how much is read at each readiness; ``max_backlog``, ``max_per_source``,
    ``slice_seconds``, ``supersede``: the input queue's (:class:`haha.io.rxqueue.InputQueue`);
    ``timer`` measures the slices (a test passes a fake one).
    """

    log = class_logger()

    def __init__(self, reactor: IReactorUDP, port: int = 0, interface: str = "::1",
                 peers: Mapping[IPv6Address | IPv6Network, tuple[Any, int]] | None = None,
                 learn: bool = True, max_learned: int = 262144, receive_buffer: int = 0,
                 send_buffer: int = 0, max_backlog: int = DEFAULT_MAX_BACKLOG,
                 slice_seconds: float = DEFAULT_SLICE_SECONDS, read_bytes: int = 256 * 1024,
                 max_per_source: int = DEFAULT_MAX_PER_SOURCE, supersede: bool = True,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self._reactor = reactor
        self._port_number = port
        self._interface = interface
        self.static: dict[IPv6Address, Endpoint] = {}
        #: The static address entries by their 16 octets (the input queue's look-up).
        self._static_packed: dict[bytes, Endpoint] = {}
        self.prefixes: list[tuple[IPv6Network, Endpoint]] = []  # (IPv6Network, (host, port)), longest prefix first
        for address, endpoint in (peers or {}).items():
            if not isinstance(address, (IPv6Address, IPv6Network)):
                raise TypeError(f"peer {address!r} is not an IPv6Address or IPv6Network")
            host, udp_port = endpoint
            if not isinstance(udp_port, int) or not 0 < udp_port < 65536:
                raise ValueError(f"peer {address}: UDP port {udp_port!r} out of range")
            if isinstance(address, IPv6Network):
                self.prefixes.append((address, (str(host), udp_port)))
            else:
                self.static[address] = (str(host), udp_port)
                self._static_packed[address.packed] = (str(host), udp_port)
        self.prefixes.sort(key=lambda entry: -entry[0].prefixlen)
        #: The prefixes as (network integer, mask, endpoint), in the same order: the send path
        #: tests a destination's 16 octets against them without making an address object.
        self._prefix_ints: list[tuple[int, int, Endpoint]] = [
            (int(net.network_address), int(net.netmask), ep) for net, ep in self.prefixes]
        self.learn = learn
        if max_learned < 1:
            raise ValueError(f"max_learned {max_learned!r} must be at least 1")
        self.max_learned = max_learned
        self.receive_buffer = receive_buffer
        self.send_buffer = send_buffer
        self.buffers: dict[str, int | None] = {}
        # What was learned, keyed by the source's 16 octets as they arrive: no address object
        # is made per packet received, nor per packet sent to a learned destination.
        self._learned: OrderedDict[bytes, Endpoint] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self._receiver: Callable[[bytes], object] | None = None
        self._port: Any = None  # twisted.internet.udp.Port (getHandle is not in its interface)
        if read_bytes < 1:
            raise ValueError(f"read_bytes {read_bytes!r} must be at least 1")
        self.read_bytes = read_bytes
        #: Packets read from the socket and not yet processed (module docstring).
        # A reactor without IReactorTime (a test's) gets everything processed at once.
        self.input = InputQueue(self._received, getattr(reactor, "callLater", None),
                                max_backlog=max_backlog, max_per_source=max_per_source,
                                slice_seconds=slice_seconds, supersede=supersede, timer=timer,
                                counters=self.counters)
        self.input.exempt = frozenset(self._static_packed)
        self._drops = KernelDrops(self.counters)
        #: Every endpoint datagrams came from -> its one shared ``(host, port)`` tuple.
        self._endpoints: dict[Any, Endpoint] = {}
        #: Hosts Twisted's Port.write has accepted (IP literals of the socket's family).
        self._checked_hosts: set[str] = set()
        #: The one buffer every datagram is read into (module docstring, "Reading").
        self._buffer = bytearray(MAX_DATAGRAM)
        self._buffers = [self._buffer]
        self._view = memoryview(self._buffer)

    @property
    def learned(self) -> OrderedDict[IPv6Address, Endpoint]:
        """The learned entries, least recently heard first (a copy, keyed by address)."""
        return OrderedDict((IPv6Address(k), ep) for k, ep in self._learned.items())

    @property
    def peer_queue(self) -> deque[tuple[bytes, Any]]:
        """The static peers' packets read and not yet processed."""
        return self.input.peers

    @property
    def queue(self) -> deque[list[Any]]:
        """Every other packet read and not yet processed."""
        return self.input.queue

    @property
    def address(self) -> Endpoint | None:
        """``(host, port)`` this transport listens on (after :meth:`start`)."""
        if self._port is None:
            return None
        a = self._port.getHost()
        return (a.host, a.port)

    def start(self, receiver: Callable[[bytes], object]) -> None:
        """Listen, and give every IPv6 packet received to ``receiver``."""
        if self._receiver is not None:
            raise RuntimeError("UdpTransport already started")
        # 8192 is every reactor's default; IReactorUDP declares the argument without one.
        self._port = self._reactor.listenUDP(self._port_number, _Protocol(self),
                                             interface=self._interface, maxPacketSize=8192)
        sock = getattr(self._port, "socket", None)
        if sock is not None:
            # Read at most read_bytes at each readiness into the input queue, then process
            # (module docstring): reading is cheap, but a sender faster than the reads would
            # keep an unbounded read loop going (the reactor blocked while the excess is
            # dropped). recvmsg_into, not Twisted's recvfrom: it brings the kernel's drop
            # count, and reads into one buffer (module docstring, "Reading").
            count_kernel_drops(sock)
            self._port.doRead = lambda: self._read(sock)
        if self.receive_buffer or self.send_buffer:
            self.buffers = apply_buffers(self._port.getHandle(), self.log, "UDP transport",
                                         self.receive_buffer, self.send_buffer)
        self._receiver = receiver

    def _read(self, sock: Any) -> None:
        """One readiness of the socket: up to ``read_bytes`` into the input queue, then
        :meth:`haha.io.rxqueue.InputQueue.run`."""
        read, limit, enqueue, drops = 0, self.read_bytes, self._enqueue, self._drops
        buffers, view = self._buffers, self._view
        while read < limit:
            try:
                n, anc, _, addr = sock.recvmsg_into(buffers, RXQ_OVFL_SPACE)
                data = bytes(view[:n])  # a copy of its own size (module docstring)
            except (BlockingIOError, ConnectionRefusedError):
                # Nothing more; or the ICMP error of an earlier send (connected sockets
                # only): Twisted's read ignores both too.
                break
            except InterruptedError:
                continue
            except OSError as e:
                self.counters["receive_errors"] += 1
                self.log.warn("UDP receive failed: {error}", error=str(e),
                              errno=_errno.errorcode.get(e.errno or 0, e.errno))
                break
            read += len(data)
            if anc:
                drops.seen(anc)
            enqueue(data, addr)
        if self._receiver is not None:
            self.input.run()

    def stop(self) -> Deferred[None] | None:
        """Stop listening (a Deferred while the port closes)."""
        self._receiver = None
        self.input.clear()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None

    def add_peer(self, address: IPv6Address, endpoint: tuple[Any, int]) -> None:
        """Add or replace a static entry."""
        self.static[address] = (str(endpoint[0]), int(endpoint[1]))
        self._static_packed[address.packed] = self.static[address]
        self.input.exempt = frozenset(self._static_packed)

    def endpoint_for(self, address: IPv6Address) -> Endpoint | None:
        """Where packets for ``address`` go: static, learned, then the longest prefix."""
        endpoint = self.static.get(address)
        if endpoint is None and type(address) is IPv6Address:
            endpoint = self._learned.get(address.packed)
        if endpoint is None:
            for network, prefix_endpoint in self.prefixes:
                if address in network:
                    return prefix_endpoint
        return endpoint

    def _enqueue(self, data: bytes, addr: Any) -> None:
        """A datagram read from the socket: into the input queue, a static peer's (from its
        own endpoint) among the peers'."""
        if len(data) < 40 or data[0] >> 4 != 6:
            self.counters["received_malformed"] += 1
            return
        endpoint = self._endpoints.get(addr)
        if endpoint is None:
            endpoint = self._shared(addr)
        if self._static_packed.get(data[8:24]) == endpoint:
            self.input.put_peer(data, endpoint)
        else:
            self.input.put(data, endpoint, endpoint)

    def _shared(self, addr: Any) -> Endpoint:
        """The one ``(host, port)`` tuple kept for ``addr`` (a socket address: two or four
        fields), made on first sight (module docstring)."""
        endpoints = self._endpoints
        if len(endpoints) >= MAX_SHARED_ENDPOINTS:
            endpoints.clear()
        endpoint: Endpoint = (addr[0], addr[1])
        endpoint = endpoints.setdefault(endpoint, endpoint)
        endpoints[addr] = endpoint
        return endpoint

    def _prefix_endpoint(self, source: bytes) -> Endpoint | None:
        """Where the prefix entries send ``source`` (16 octets), or None."""
        a = int.from_bytes(source, "big")
        for net, mask, endpoint in self._prefix_ints:
            if a & mask == net:
                return endpoint
        return None

    def _received(self, data: bytes, addr: Any) -> None:
        if self._receiver is None:
            return
        if len(data) < 40 or data[0] >> 4 != 6:
            self.counters["received_malformed"] += 1
            return
        endpoint = self._endpoints.get(addr)
        if endpoint is None:
            endpoint = self._shared(addr)
        if self.learn:
            src = data[8:24]  # compared and kept as octets (no address object per packet)
            if src != _UNSPECIFIED and src not in self._static_packed:
                learned = self._learned
                known = learned.get(src)
                if known == endpoint:
                    learned.move_to_end(src)
                elif self._prefix_ints and self._prefix_endpoint(src) == endpoint:
                    # the prefix entry sends it here already (module docstring)
                    if known is not None:
                        del learned[src]
                else:
                    self.counters["learned"] += 1
                    learned[src] = endpoint
                    learned.move_to_end(src)
                    while len(learned) > self.max_learned:
                        learned.popitem(last=False)
        self.counters["received"] += 1
        try:
            self._receiver(data)
        except Exception:
            self.counters["receiver_errors"] += 1
            self.log.failure("receiver failed on a packet from {endpoint}", endpoint=endpoint)

    def send(self, packet: bytes, interface: str | None = None) -> None:
        """Send a complete IPv6 packet to its destination's endpoint (multicast: to every
        static peer).

        A unicast packet costs a dictionary look-up or two by its 16 destination octets (the
        static entries, then the learned ones; then the prefixes, tested on the octets'
        integer) and one ``sendto`` of the packet as it is: Twisted's ``Port.write`` checks
        that the host is an IP literal of the socket's family by parsing it at every call, so
        a host is checked by it once, at its first datagram, and written to directly after."""
        port = self._port
        if port is None:
            self.counters["send_not_started"] += 1
            return
        if len(packet) < 40 or packet[0] >> 4 != 6:
            self.counters["send_invalid"] += 1
            return
        if packet.__class__ is not bytes:
            packet = bytes(packet)
        if packet[24] != 0xFF:  # unicast (RFC 4291 2.7: multicast is ff00::/8)
            key = packet[24:40]
            ep = self._static_packed.get(key) or self._learned.get(key)
            if ep is None:
                a = int.from_bytes(key, "big")  # _prefix_endpoint, inlined: every packet
                for net, mask, prefix_endpoint in self._prefix_ints:  # to a node passes here
                    if a & mask == net:
                        ep = prefix_endpoint
                        break
                else:
                    return self._no_route(key)
            return self._write(port, packet, ep)
        targets = sorted(set(self.static.values()))
        if not targets:
            return self._no_route(packet[24:40])
        for ep in targets:
            self._write(port, packet, ep)

    def _no_route(self, destination: bytes) -> None:
        self.counters["no_route"] += 1
        if enabled(self.log, LogLevel.debug):
            self.log.debug("no UDP endpoint for {destination}",
                           destination=str(IPv6Address(destination)))

    def _write(self, port: Any, packet: bytes, ep: Endpoint) -> None:
        """One datagram to ``ep``, counted (``sent`` or ``send_errors``)."""
        try:
            sock = getattr(port, "socket", None)
            if sock is not None and ep[0] in self._checked_hosts:
                try:
                    sock.sendto(packet, ep)  # EINTR is retried by Python (PEP 475)
                except ConnectionRefusedError:  # as Port.write: not an error without a
                    pass  # connection (an ICMP error of an earlier datagram)
                except OSError as e:
                    if e.errno == _errno.EMSGSIZE:  # as Port.write
                        raise MessageLengthError("message too long") from None
                    raise
            else:
                port.write(packet, ep)
                if sock is not None:  # Port.write accepted the host: no need to check again
                    if len(self._checked_hosts) >= 4096:
                        self._checked_hosts.clear()
                    self._checked_hosts.add(ep[0])
        except OSError as e:
            self.counters["send_errors"] += 1
            self.log.warn("UDP send to {endpoint} failed: {error}", endpoint=ep, error=str(e))
        else:
            self.counters["sent"] += 1
