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
   entries (least recently learned forgotten first);
3. otherwise the static map's prefixes, ``IPv6Network -> (host, port)``, longest first: a load
   generator running thousands of mobile nodes behind one UDP port declares their care-of
   prefix once, so a home agent that never heard from a node (a survivor taking it over) can
   still reach it;
4. a multicast destination goes to every distinct static endpoint of an address (not of a
   prefix);
5. anything else is counted (``no_route``) and dropped.
"""

from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import LogLevel
from zope.interface import implementer

from ..interfaces import IMobilityTransport
from ..logging import class_logger, enabled
from .sockbuf import apply_buffers

#: A UDP endpoint: (host, port).
Endpoint = tuple[str, int]


class _Protocol(DatagramProtocol):
    def __init__(self, transport: "UdpTransport") -> None:
        self._owner = transport

    def datagramReceived(self, data: bytes, addr: Any) -> None:
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
    """

    log = class_logger()

    def __init__(self, reactor: IReactorUDP, port: int = 0, interface: str = "::1",
                 peers: Mapping[IPv6Address | IPv6Network, tuple[Any, int]] | None = None,
                 learn: bool = True, max_learned: int = 262144, receive_buffer: int = 0,
                 send_buffer: int = 0) -> None:
        self._reactor = reactor
        self._port_number = port
        self._interface = interface
        self.static: dict[IPv6Address, Endpoint] = {}
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
        self.prefixes.sort(key=lambda entry: -entry[0].prefixlen)
        self.learn = learn
        if max_learned < 1:
            raise ValueError(f"max_learned {max_learned!r} must be at least 1")
        self.max_learned = max_learned
        self.receive_buffer = receive_buffer
        self.send_buffer = send_buffer
        self.buffers: dict[str, int | None] = {}
        self.learned: OrderedDict[IPv6Address, Endpoint] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self._receiver: Callable[[bytes], object] | None = None
        self._port: Any = None  # twisted.internet.udp.Port (getHandle is not in its interface)

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
        if self.receive_buffer or self.send_buffer:
            self.buffers = apply_buffers(self._port.getHandle(), self.log, "UDP transport",
                                         self.receive_buffer, self.send_buffer)
        self._receiver = receiver

    def stop(self) -> Deferred[None] | None:
        """Stop listening (a Deferred while the port closes)."""
        self._receiver = None
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None

    def add_peer(self, address: IPv6Address, endpoint: tuple[Any, int]) -> None:
        """Add or replace a static entry."""
        self.static[address] = (str(endpoint[0]), int(endpoint[1]))

    def endpoint_for(self, address: IPv6Address) -> Endpoint | None:
        """Where packets for ``address`` go: static, learned, then the longest prefix."""
        endpoint = self.static.get(address) or self.learned.get(address)
        if endpoint is None:
            for network, prefix_endpoint in self.prefixes:
                if address in network:
                    return prefix_endpoint
        return endpoint

    def _received(self, data: bytes, addr: Any) -> None:
        if self._receiver is None:
            return
        if len(data) < 40 or data[0] >> 4 != 6:
            self.counters["received_malformed"] += 1
            return
        src = IPv6Address(data[8:24])
        endpoint = (addr[0], addr[1])
        if self.learn and src not in self.static and not src.is_unspecified:
            if self.learned.get(src) != endpoint:
                self.counters["learned"] += 1
            self.learned[src] = endpoint
            self.learned.move_to_end(src)
            while len(self.learned) > self.max_learned:
                self.learned.popitem(last=False)
        self.counters["received"] += 1
        try:
            self._receiver(data)
        except Exception:
            self.counters["receiver_errors"] += 1
            self.log.failure("receiver failed on a packet from {endpoint}", endpoint=endpoint)

    def send(self, packet: bytes, interface: str | None = None) -> None:
        """Send a complete IPv6 packet to its destination's endpoint (multicast: to every
        static peer)."""
        if self._port is None:
            self.counters["send_not_started"] += 1
            return
        if len(packet) < 40 or packet[0] >> 4 != 6:
            self.counters["send_invalid"] += 1
            return
        dst = IPv6Address(bytes(packet[24:40]))
        if dst.is_multicast:
            targets = sorted(set(self.static.values()))
        else:
            ep = self.endpoint_for(dst)
            targets = [ep] if ep else []
        if not targets:
            self.counters["no_route"] += 1
            if enabled(self.log, LogLevel.debug):
                self.log.debug("no UDP endpoint for {destination}", destination=str(dst))
            return
        for ep in targets:
            try:
                self._port.write(bytes(packet), ep)
            except OSError as e:
                self.counters["send_errors"] += 1
                self.log.warn("UDP send to {endpoint} failed: {error}", endpoint=ep, error=str(e))
            else:
                self.counters["sent"] += 1
