"""The ``tun`` forwarding backend: user-space RFC 2473 tunnelling that works on any kernel.

Home agent side (:class:`TunBackend`):

- Routes for every home address (/128) and mobile network prefix point into a TUN device
  (through the netlink seam). The kernel forwards packets for a mobile node there, having
  already decremented their Hop Limit as a router does (RFC 2473 3.1: the entry point forwards
  the original packet, then encapsulates it).
- A packet read from the TUN is looked up by destination (home address exactly, then the
  longest matching mobile network prefix) and encapsulated IPv6-in-IPv6 (RFC 2473 3.1): outer
  source the route's ``local`` home agent address, outer destination the care-of address, outer
  Hop Limit the tunnel hop limit (default 64), Traffic Class and Flow Label 0, no Tunnel
  Encapsulation Limit option; the result goes out through the transport (raw sockets).
- :meth:`TunBackend.decapsulate` takes an inbound IPv6-in-IPv6 packet (the daemon hands it
  over): the outer source must be the care-of address of an installed route and the outer
  destination that route's ``local`` address; the inner source must be that node's home address
  or inside its prefixes. Then the inner packet is written to the TUN and the kernel forwards it
  (decrementing its Hop Limit, RFC 2473 3.2). Everything else is counted by reason and dropped:
  no open relay.
- Proxy ND, the unsolicited Neighbour Advertisement on take-over and the advertised home prefix
  are :class:`haha.backends.common.LinkDuties` (shared with the netlink backend).

Mobile node side (:class:`MobileTunnel`): the same machinery reversed. Policy routing sends
everything sourced from the home address (and a mobile router's prefixes) into the TUN; those
packets are encapsulated from the care-of address to the home agent, and the home agent's
tunnelled packets to the home address (or prefixes) are decapsulated into the TUN.

With an offloaded TUN (``super-packets = yes``) packets whose checksum a sender on this machine
left partial are not summed in Python: the home agent writes the tunnel packet back to its
TUN for the kernel to forward and finish, and both ends write a partial inner packet behind
``NEEDS_CSUM`` (docs/io.md "Partial checksums left to the kernel").

Operating-system failures after start are logged and counted (``netlink_errors``), not raised;
bad arguments raise ``TypeError``/``ValueError`` and change nothing.
"""

from __future__ import annotations

import struct
from collections import Counter
from ipaddress import IPv6Address, IPv6Network
from typing import (TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Iterable, Optional, Set,
                    Tuple, Union)

from zope.interface import implementer

from ..logging import class_logger
from ..interfaces import (
    IAddressHolder,
    IDecapsulator,
    IForwardingBackend,
    IHomeAnnouncer,
    IMobileTunnel,
    ISnapshot,
    IStartStop,
    ITunnelFastPath,
)
from ..io.offload import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,
                          VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR, VNET_HDR_LEN, VNET_NONE,
                          complete_partial_checksum, partial_header)
from ..io.superpkt import (MAX_INNER, KernelSum, TunnelSocket, complete_tcp_checksum,
                           gso_header, pseudo_sum, tcp_checksum_ok)
from ..io.tun import TunDevice
from ..wire.errors import WireError
from ..wire.ipv6 import parse_packet
from ..wire.numbers import IPPROTO_IPV6
from .common import LinkDuties, Ownership
from .mobile import MobileRouting, check_endpoint, check_table
from .netsys import RTPROT_HAHA, NetlinkFailure
from .null import check_route, route_json

if TYPE_CHECKING:
    from ..core.duties import ForwardingRoute
    from ..wire.ipv6 import Packet
    from .context import BackendContext

#: A packet or part of one as the data path handles it (slices are memoryviews, uncopied).
_Bytes = Union[bytes, bytearray, memoryview]
#: Tunnel MTU default: a 1500-octet link minus the 40-octet outer header (RFC 2473 7).
DEFAULT_MTU = 1460
DEFAULT_HOP_LIMIT = 64
#: The outer header: version 6, Traffic Class and Flow Label 0, Payload Length, Next Header
#: 41, Hop Limit, then source and destination (32 octets, prepared per route).
_OUTER = struct.Struct("!IHBB32s")
_VERSION_6 = 0x60000000
#: Entries at most in each per-packet cache (destination -> route, accepted tunnel
#: addresses); a full cache is emptied and refilled by the slow path.
FAST_CACHE_SIZE = 4096


def _inner(packet: _Bytes) -> Optional[Tuple[IPv6Address, IPv6Address]]:
    """``(src, dst)`` of an inner IPv6 packet, or None when it is not one."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    return IPv6Address(bytes(packet[8:24])), IPv6Address(bytes(packet[24:40]))


def _in_any(address: IPv6Address, prefixes: Iterable[IPv6Network]) -> bool:
    return any(address in p for p in prefixes)


class _Base(LinkDuties):
    log = class_logger()

    def __init__(self, reactor: Any, transport: Any, tun_name: str, mtu: int, hop_limit: int,
                 netlink: Any, system: Any, tun: Optional[TunDevice],
                 ownership: Optional[Ownership] = None, log: Any = None,
                 super_packets: bool = False) -> None:
        if not 1 <= hop_limit <= 255:
            raise ValueError(f"tunnel hop limit {hop_limit} out of range 1-255")
        if not 1280 <= mtu <= 65535:
            raise ValueError(f"tunnel MTU {mtu} out of range 1280-65535 (RFC 8200 5)")
        self._reactor = reactor
        self.transport = transport
        self.tun = tun if tun is not None else TunDevice(reactor, tun_name, system=system)
        self._netlink = netlink
        self.mtu = mtu
        self.hop_limit = hop_limit
        self.counters: Counter[str] = Counter()
        self.running = False
        self.router_flag = False
        #: Carry TCP super-packets whole, as outer fragments (haha.io.superpkt; docs/io.md
        #: "Super-packets"): implies ``tun_offload``. Off by default: a deployed peer
        #: (a kernel tunnel) cannot forward what it reassembles, and middleboxes drop
        #: fragments.
        self.super_packets = bool(super_packets)
        #: The protocol-41 socket of the super-packets (None without them); replaceable
        #: before start (tests).
        netns = getattr(system, "netns", None)
        self.tunnel_socket: Optional[TunnelSocket] = TunnelSocket(
            reactor, hop_limit, netns=netns) if super_packets else None
        #: Sums the super-packets' TCP segments in the kernel (None: in Python);
        #: replaceable before start (tests).
        self.kernel_sum: Optional[KernelSum] = KernelSum(netns) if super_packets else None
        self._init_link_duties(ownership, log)
        self._fast_reset()

    #: Open the TUN with the kernel's offloads (haha.io.tun: TCP super-packets, partial
    #: checksums), so one read carries up to 64 KB. Off: measured, cutting the super-packets
    #: and summing every segment in Python costs more CPU per megabyte than the kernel's own
    #: segmentation plus one read per packet (docs/io.md, "Offloads").
    tun_offload = False

    def _from_tun(self, packet: bytes) -> None:
        """A packet the kernel routed into the TUN (each subclass's own)."""
        raise NotImplementedError

    def decapsulate(self, packet: bytes) -> bool:
        """An inbound IPv6-in-IPv6 packet (each subclass's own)."""
        raise NotImplementedError

    def _gso_from_tun(self, frame: bytes) -> bool:
        """A GSO read (super-packets on): True when it was sent whole (each subclass's)."""
        raise NotImplementedError

    def _from_tunnel_socket(self, source: bytes, destination: bytes, inner: bytes) -> None:
        """A reassembled tunnel packet (super-packets on; each subclass's own)."""
        raise NotImplementedError

    def _start_tun(self) -> None:
        self._fast_reset()
        if self.tun_offload or self.super_packets:
            self.tun.start(self._from_tun, offload=True)
        else:
            self.tun.start(self._from_tun)
        self._tunnel_hook(self.decapsulate)
        if self.tun.offload:
            self._partial_hooks(True)
        try:
            self.netlink.link_set(self.tun.name, up=True, mtu=self.mtu)
            self._start_super()
        except Exception:
            self._tunnel_hook(None)
            self._partial_hooks(False)
            self.tun.stop()
            raise

    def _partial_hooks(self, on: bool) -> None:
        """Partial checksums left to the kernel (docs/io.md "Partial checksums left to the
        kernel"): inbound tunnel packets whose inner checksum is partial are written to the
        offloaded TUN as they are (raw transport), and, where the subclass can
        (:meth:`_partial_from_tun`), partial reads of the TUN leave as they are."""
        setter = getattr(self.transport, "set_partial_tunnel_receiver", None)
        if setter is not None:
            setter(self._decapsulate_partial if on else None)
        # A transport reading every interface would read each tunnel packet written back
        # to the TUN as well (and drop it, from no care-of address): the sum stays ours.
        self.tun.partial_receiver = self._partial_from_tun if on and not getattr(
            self.transport, "reads_every_interface", False) else None

    def _partial_from_tun(self, frame: bytes) -> bool:
        """A non-GSO read with a partial checksum: True when it was sent on as it is (the
        home agent's; a node cannot, and completes it)."""
        return False

    def _decapsulate_partial(self, packet: bytes) -> bool:
        """An inbound tunnel packet whose inner TCP/UDP checksum the sender left partial
        (a sender on this machine, through veths): decapsulated as :meth:`decapsulate`
        does, the inner packet written behind a ``NEEDS_CSUM`` header so that the kernel
        behind the (offloaded) TUN does what the hardware would have done, instead of
        summing it here. Returns what :meth:`decapsulate` returns."""
        self._partial = True
        try:
            return self.decapsulate(packet)
        finally:
            self._partial = False

    def _start_super(self) -> None:
        """Super-packets: GSO reads whole to the tunnel socket, reassembled tunnel packets
        from it, and the guard letting fragments through. Raises when any part cannot."""
        sock = self.tunnel_socket
        if sock is None:
            return
        passer = getattr(self.transport, "pass_tunnel_fragments", None)
        if passer is None:
            raise RuntimeError("super-packets need the raw transport (its netfilter guard "
                               "must let tunnel fragments through to the kernel)")
        sock.mark = getattr(self.transport, "mark", None)
        sock.start(self._from_tunnel_socket)
        try:
            passer(True)
        except Exception:
            sock.stop()
            raise
        if self.kernel_sum is not None:
            self.kernel_sum.start()
        self.tun.gso_receiver = self._gso_from_tun

    def _stop_super(self) -> None:
        sock = self.tunnel_socket
        if sock is None or not sock.running:
            return
        self.tun.gso_receiver = None
        sock.stop()
        if self.kernel_sum is not None:
            self.kernel_sum.stop()
        try:
            self.transport.pass_tunnel_fragments(False)
        except Exception as e:  # the transport may be stopped already; nothing to undo then
            self.log.debug("guard not restored: {error}", error=str(e))

    def _send_super(self, frame: bytes, addresses: bytes) -> bool:
        """Send the super-packet of ``frame`` (virtio_net_hdr in front) whole from
        ``addresses[:16]`` to ``addresses[16:]``, its TCP checksum completed; False when it
        cannot go whole (the caller cuts it into segments)."""
        sock = self.tunnel_socket
        if sock is None or len(frame) - 10 > MAX_INNER:
            self.counters["super_too_big"] += 1
            return False
        mv = memoryview(frame)
        packet = mv[10:]
        if not sock.send(addresses[:16], addresses[16:],
                         (mv[10:66], complete_tcp_checksum(packet, summer=self.kernel_sum),
                          mv[68:])):
            self.counters["super_send_failed"] += 1
            return False
        self.counters["super_sent"] += 1
        self.counters["encapsulated"] += 1
        return True

    @staticmethod
    def _whole_tcp(frame: bytes) -> bool:
        """``frame`` (a GSO read) is a TCPv6 super-packet whose TCP header follows the IPv6
        header directly, with the checksum left to us and a Payload Length that says its
        length (what the exit point checks)."""
        flags, gso_type, _, _, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
        return (gso_type & 0x7F == VIRTIO_NET_HDR_GSO_TCPV6 and
                bool(flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) and csum_start == 40 and
                csum_offset == 16 and len(frame) >= 70 and frame[10] >> 4 == 6 and
                frame[16] == 6 and (frame[14] << 8 | frame[15]) == len(frame) - 50)

    def _inner_ok(self, inner: bytes) -> bool:
        """A reassembled inner packet is IPv6 and exactly as long as it says."""
        if len(inner) < 40 or inner[0] >> 4 != 6 or \
                40 + (inner[4] << 8 | inner[5]) != len(inner):
            self.counters["decap_malformed"] += 1
            return False
        return True

    def _deliver_super(self, inner: bytes) -> bool:
        """Write a reassembled inner packet to the TUN: a TCP segment larger than the tunnel
        MTU, its checksum verified, as one GSO super-packet (the kernel finishes its checksum
        and segments it when it forwards it), anything else as it is."""
        vnet = gso_header(inner, self.mtu)
        if vnet is None:
            return self._deliver(inner)
        # The kernel trusts what it is told needs a checksum: damage on the way stops here.
        if not tcp_checksum_ok(inner, summer=self.kernel_sum):
            self.counters["super_checksum_bad"] += 1
            return False
        mv = memoryview(inner)
        if self.tun.write_offloaded(vnet, (mv[:56], pseudo_sum(inner), mv[58:])):
            self.counters["decapsulated"] += 1
            self.counters["super_received"] += 1
            return True
        self.counters["decap_write_errors"] += 1
        return False

    def _tunnel_hook(self, receiver: Optional[Callable[[bytes], bool]]) -> None:
        """Let the transport hand tunnelled packets straight to ``receiver`` (our
        ``decapsulate``; None: to the daemon again), when it can
        (:meth:`haha.io.raw.RawTransport.set_tunnel_receiver`)."""
        if ITunnelFastPath.providedBy(self.transport):
            self.transport.set_tunnel_receiver(receiver)
        if receiver is None:
            self._partial_hooks(False)

    def _encapsulate(self, inner: _Bytes, src: IPv6Address, dst: IPv6Address) -> None:
        self._send_tunnelled(inner, src.packed + dst.packed)

    def _send_tunnelled(self, inner: _Bytes, addresses: bytes) -> None:
        """Encapsulate ``inner`` (RFC 2473 3.1) with the outer ``addresses`` (source and
        destination, 32 octets) and send it: the 40-octet header and the packet go to the
        transport as two buffers (``send_encapsulated``, not copied into one) when it can."""
        n = len(inner)
        if n + 40 > 0xFFFF:
            self.counters["too_big"] += 1
            return
        header = _OUTER.pack(_VERSION_6, n, IPPROTO_IPV6, self.hop_limit, addresses)
        send = self._split_send
        if send is not None:
            send(header, inner)
        else:
            self.transport.send(header + bytes(inner))
        self.counters["encapsulated"] += 1

    def _fast_reset(self) -> None:
        """Forget the per-packet caches (any change of routes or end points)."""
        # inner destination (home agent) or source (mobile node) -> outer addresses
        self._encap_cache: Dict[bytes, bytes] = {}
        self._decap_cache: Set[bytes] = set()  # outer and inner addresses accepted once
        # super-packets: inner destination -> outer addresses, None: not a host route
        self._super_cache: Dict[bytes, Optional[bytes]] = {}
        self._split_send: Optional[Callable[[bytes, _Bytes], Any]] = self.transport.send_encapsulated \
            if ITunnelFastPath.providedBy(self.transport) else None

    @staticmethod
    def _simple_tunnelled(packet: bytes) -> Optional[int]:
        """The end of the inner packet when ``packet`` is IPv6 directly followed by IPv6 (no
        extension headers) and both lengths fit; else None (the full parser decides)."""
        if len(packet) < 80 or packet[6] != IPPROTO_IPV6 or packet[0] >> 4 != 6 \
                or packet[40] >> 4 != 6:
            return None
        end = 80 + (packet[44] << 8 | packet[45])
        if end > 40 + (packet[4] << 8 | packet[5]) or end > len(packet):
            return None
        return end

    def _remember_accepted(self, packet: bytes, key: bytes) -> None:
        """The slow path accepted ``packet``: accept its like on the fast path."""
        if self._simple_tunnelled(packet) is None:
            return
        if len(self._decap_cache) >= FAST_CACHE_SIZE:
            self._decap_cache.clear()
        self._decap_cache.add(key)

    def _parse_tunnelled(self, packet: bytes
                         ) -> Optional[Tuple[Packet, Tuple[IPv6Address, IPv6Address]]]:
        """The outer Packet of an IPv6-in-IPv6 packet and the inner ``(src, dst)``, or None
        (counted)."""
        try:
            outer = parse_packet(packet)
        except WireError as e:
            self.counters["decap_malformed"] += 1
            self.log.debug("malformed tunnelled packet: {error}", error=str(e))
            return None
        if outer.next_header != IPPROTO_IPV6:
            self.counters["decap_not_tunnel"] += 1
            return None
        inner = _inner(outer.payload)
        if inner is None:
            self.counters["decap_malformed"] += 1
            return None
        return outer, inner

    #: Set while :meth:`_decapsulate_partial` runs: :meth:`_deliver` leaves the checksum to
    #: the kernel.
    _partial = False

    def _deliver(self, inner: _Bytes) -> bool:
        if self._partial:
            vnet = partial_header(inner)
            if vnet is None:  # completed here, as the transport would have (or not at all)
                done = complete_partial_checksum(bytes(inner))
                if done is None:
                    self.counters["decap_partial_unfinished"] += 1
                else:
                    inner = done
                    self.counters["decap_partial_completed"] += 1
                vnet = VNET_NONE
            if self.tun.write_offloaded(vnet, (memoryview(inner),)):
                self.counters["decapsulated"] += 1
                self.counters["decap_partial"] += 1
                return True
            self.counters["decap_write_errors"] += 1
            return False
        if self.tun.write(inner):
            self.counters["decapsulated"] += 1
            return True
        self.counters["decap_write_errors"] += 1
        return False


@implementer(IForwardingBackend, IDecapsulator, IAddressHolder)
class TunBackend(_Base):
    """The home agent's user-space forwarding plane.

    ``reactor``: ``addReader``/``removeReader``. ``transport``: sends the encapsulated packets
    and the unsolicited NA (its ``send`` must accept ``interface=`` for the NA, as
    :class:`haha.io.raw.RawTransport` does). ``tun_name``: the device (``%d`` allowed).
    ``table``: the routing table for the routes (``None``: main). ``enable_forwarding``: set
    ``net.ipv6.conf.all.forwarding=1`` at start (restored at stop). ``netlink``/``system``: the
    seams (defaults: pyroute2 and the real system in the current namespace). ``tun``: a ready
    :class:`~haha.io.tun.TunDevice` instead. ``ownership``: what an earlier run of the same
    daemon may have left (:class:`~haha.backends.common.Ownership`; None: nothing reclaimed).
    ``log``: a Logger carrying the daemon's identity (None: the class's own).
    The plugin builds it with :func:`build` from a
    :class:`~haha.backends.context.BackendContext`.
    """

    name = "tun"

    def __init__(self, reactor: Any, transport: Any, tun_name: str = "haha%d",
                 mtu: int = DEFAULT_MTU, hop_limit: int = DEFAULT_HOP_LIMIT,
                 table: Optional[int] = None, route_metric: Optional[int] = None,
                 prefix_metric: int = 1024, enable_forwarding: bool = True,
                 router_flag: bool = False, netlink: Any = None, system: Any = None,
                 tun: Any = None, ownership: Optional[Ownership] = None,
                 log: Any = None, super_packets: bool = False) -> None:
        super().__init__(reactor, transport, tun_name, mtu, hop_limit, netlink, system, tun,
                         ownership, log, super_packets)
        self.table = table
        self.route_metric = route_metric
        self.prefix_metric = prefix_metric
        self.enable_forwarding = enable_forwarding
        self.router_flag = router_flag
        self.routes: Dict[IPv6Address, Any] = {}  # home address -> route
        # care-of -> set of home addresses
        self._by_care_of: Dict[IPv6Address, Set[IPv6Address]] = {}
        self._prefix_owner: Dict[IPv6Network, IPv6Address] = {}  # prefix -> home address
        # prefix length -> {network int: IPv6Network}
        self._lpm: Dict[int, Dict[int, IPv6Network]] = {}
        self._kernel_routes: Set[IPv6Network] = set()  # routed into the TUN

    def capabilities(self) -> frozenset[str]:
        return frozenset({"tunnel", "proxy-nd", "prefix-route", "userspace"})

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Remove what an earlier run of the same daemon left in the kernel (when
        ``ownership`` is set: :mod:`haha.backends.common`), open the TUN, bring it up with the
        tunnel MTU, enable forwarding. Raises when the system cannot (no /dev/net/tun, not
        allowed), no transport was given, or the same daemon runs already
        (:class:`~haha.backends.common.StateBusy`)."""
        if self.running:
            raise RuntimeError("tun backend already started")
        if self.transport is None:
            raise RuntimeError("the tun backend has no transport to send tunnelled packets "
                               "through: build it with one (TunBackend(reactor, transport, ...), "
                               "or a BackendContext with a transport)")
        self._claim()  # before anything is installed: an earlier run's leftovers go first
        try:
            self._start_tun()
        except Exception:
            self._release()
            raise
        if self.enable_forwarding:
            try:
                self._set_sysctl("net.ipv6.conf.all.forwarding", "1")
            except NetlinkFailure:
                self._tunnel_hook(None)
                self._stop_super()
                self.tun.stop()
                self._release()
                raise
        self.running = True
        for route in list(self.routes.values()):  # installed before start: routes now
            self.install(route)
        self.log.info("tun backend started on {device}", device=self.tun.name)

    def stop(self) -> None:
        """Remove every route, proxy entry and prefix this backend installed; restore sysctls;
        close the TUN (which deletes the device). Idempotent."""
        for home in list(self.routes):
            self.remove(home)
        self._stop_link_duties()
        if self.running:
            self._tunnel_hook(None)
        self._stop_super()
        self.tun.stop()
        self.running = False

    # -- bindings ---------------------------------------------------------------------------

    def install(self, route: Any) -> None:
        """Forward ``route.home_address`` and ``route.prefixes`` through the tunnel to
        ``route.care_of``; calling it again for the same home address replaces the state."""
        check_route(route)
        self._fast_reset()
        home = route.home_address
        prefixes = tuple(route.prefixes)
        wanted = {IPv6Network(home)} | set(prefixes)
        old = self.routes.get(home)
        if old is not None:
            self._forget(old, keep=wanted)
        self.routes[home] = route
        self._by_care_of.setdefault(route.care_of, set()).add(home)
        for p in prefixes:
            prev = self._prefix_owner.get(p)
            if prev is not None and prev != home:
                self.counters["prefix_conflicts"] += 1
                self.log.warn("prefix {prefix} moves from {old} to {new}", prefix=str(p),
                              old=str(prev), new=str(home))
            self._prefix_owner[p] = home
            self._lpm.setdefault(p.prefixlen, {})[int(p.network_address)] = p
        for net in wanted:
            if net not in self._kernel_routes and self.running:
                if self._nl(f"route {net} into {self.tun.name}", self.netlink.route_replace,
                            net, dev=self.tun.name, table=self.table, metric=self.route_metric,
                            proto=RTPROT_HAHA):
                    self._kernel_routes.add(net)
        self.counters["installs"] += 1

    def remove(self, home_address: IPv6Address) -> None:
        route = self.routes.pop(home_address, None)
        if route is None:
            return
        self._fast_reset()
        self._forget(route, keep=set())
        self.counters["removes"] += 1

    def _forget(self, route: ForwardingRoute, keep: Set[IPv6Network]) -> None:
        home = route.home_address
        homes = self._by_care_of.get(route.care_of)
        if homes is not None:
            homes.discard(home)
            if not homes:
                del self._by_care_of[route.care_of]
        owned = {IPv6Network(home)} | {p for p in route.prefixes
                                       if self._prefix_owner.get(p) == home}
        for p in route.prefixes:
            if self._prefix_owner.get(p) == home and p not in keep:
                del self._prefix_owner[p]
                bucket = self._lpm.get(p.prefixlen, {})
                bucket.pop(int(p.network_address), None)
                if not bucket:
                    self._lpm.pop(p.prefixlen, None)
        for net in owned - keep:
            if net in self._kernel_routes:
                self._kernel_routes.discard(net)
                self._nl(f"remove route {net}", self.netlink.route_delete, net,
                         dev=self.tun.name, table=self.table, metric=self.route_metric,
                         proto=RTPROT_HAHA)

    def lookup(self, destination: IPv6Address) -> Any:
        """The route for ``destination``: exact home address, else longest-prefix match over
        the mobile network prefixes; None when nothing matches."""
        route = self.routes.get(destination)
        if route is not None:
            return route
        value = int(destination)
        for plen in sorted(self._lpm, reverse=True):
            key = value >> (128 - plen) << (128 - plen) if plen else 0
            net = self._lpm[plen].get(key)
            if net is not None:
                return self.routes.get(self._prefix_owner[net])
        return None

    # -- data path --------------------------------------------------------------------------

    def _from_tun(self, packet: bytes) -> None:
        if len(packet) < 40 or packet[0] >> 4 != 6:
            self.counters["tun_malformed"] += 1
            return
        addresses = self._outer_addresses(packet[24:40])
        if addresses is None:
            return
        if packet[7] == 0:
            self.counters["hop_limit_exceeded"] += 1
            return
        self._send_tunnelled(packet, addresses)

    def _outer_addresses(self, key: bytes) -> Optional[bytes]:
        """The outer source and destination (32 octets) for inner destination ``key``, or
        None (counted ``tun_no_route``)."""
        addresses = self._encap_cache.get(key)
        if addresses is None:
            route = self.lookup(IPv6Address(key))
            if route is None:
                self.counters["tun_no_route"] += 1
                return None
            addresses = route.local.packed + route.care_of.packed
            if len(self._encap_cache) >= FAST_CACHE_SIZE:
                self._encap_cache.clear()
            self._encap_cache[key] = addresses
        return addresses

    def _partial_from_tun(self, frame: bytes) -> bool:
        """A read whose TCP/UDP checksum the kernel left partial (a sender on this machine;
        what arrives from a network card is summed): the tunnel packet is written back to
        the TUN behind a ``NEEDS_CSUM`` header pointing at the inner checksum, and the
        kernel forwards it to the care-of address like any packet, finishing the checksum
        in C where the hardware would (or leaving it to the next veth, as it left it to
        us). Its outer Hop Limit is written one higher, since that forwarding takes one off.
        False (summed here, sent the usual way) when it cannot: a tunnel Hop Limit of 255,
        a packet too long to be tunnelled, a header that does not fit, or forwarding left to
        the administrator (``forwarding = no``: the kernel might not forward it)."""
        n = len(frame) - VNET_HDR_LEN
        if self.hop_limit >= 255 or n < 40 or n + 40 > 0xFFFF or frame[10] >> 4 != 6 or \
                not self.enable_forwarding:
            return False
        _, _, _, _, start, offset = VNET_HDR.unpack_from(frame)
        if start < 40 or start + offset + 2 > n:
            return False
        addresses = self._outer_addresses(frame[34:50])
        if addresses is None:
            return True  # counted: dropped as _from_tun drops it
        if frame[17] == 0:
            self.counters["hop_limit_exceeded"] += 1
            return True
        header = _OUTER.pack(_VERSION_6, n, IPPROTO_IPV6, self.hop_limit + 1, addresses)
        vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0,
                             40 + start, offset)
        if not self.tun.write_offloaded(vnet, (header, memoryview(frame)[VNET_HDR_LEN:])):
            return False
        self.counters["encapsulated"] += 1
        self.counters["encap_partial"] += 1
        return True

    def decapsulate(self, packet: bytes) -> bool:
        """Take an inbound IPv6-in-IPv6 packet (bytes); write its inner packet to the TUN when
        it comes from a registered care-of address with a source the binding owns. Returns
        True when written; drops are counted by reason (``decap_*``). Outer and inner
        addresses already accepted once (and no extension headers) take a fast path."""
        if self._decap_cache:
            end = self._simple_tunnelled(packet)
            if end is not None and packet[8:40] + packet[48:64] in self._decap_cache:
                return self._deliver(memoryview(packet)[40:end])
        parsed = self._parse_tunnelled(packet)
        if parsed is None:
            return False
        outer, (inner_src, _) = parsed
        if not self._accepts(outer.src, outer.dst, inner_src):
            return False
        if not self._deliver(outer.payload):
            return False
        self._remember_accepted(packet, packet[8:40] + packet[48:64])
        return True

    def _accepts(self, outer_src: IPv6Address, outer_dst: IPv6Address,
                 inner_src: IPv6Address) -> bool:
        """A tunnel packet from a registered care-of address to that route's ``local``
        address, with an inner source the binding owns; the rest counted by reason."""
        homes = self._by_care_of.get(outer_src)
        if not homes:
            self.counters["decap_unknown_care_of"] += 1
            return False
        for home in homes:
            route = self.routes[home]
            if outer_dst == route.local and (
                    inner_src == home or _in_any(inner_src, route.prefixes)):
                return True
        if not any(outer_dst == self.routes[h].local for h in homes):
            self.counters["decap_wrong_local"] += 1
        else:
            self.counters["decap_spoofed_source"] += 1
        return False

    def _gso_from_tun(self, frame: bytes) -> bool:
        """A TCP super-packet to a home address (a host route: a mobile network's prefix
        keeps wire-sized packets, which a kernel mobile router can forward) goes whole."""
        if not self._whole_tcp(frame):
            return False
        key = frame[34:50]
        addresses = self._super_cache.get(key, b"")
        if addresses == b"":
            route = self.routes.get(IPv6Address(key))
            addresses = route.local.packed + route.care_of.packed if route is not None else None
            if len(self._super_cache) >= FAST_CACHE_SIZE:
                self._super_cache.clear()
            self._super_cache[key] = addresses
        if addresses is None:
            return False
        if frame[17] == 0:
            self.counters["hop_limit_exceeded"] += 1
            return True
        return self._send_super(frame, addresses)

    def _from_tunnel_socket(self, source: bytes, destination: bytes, inner: bytes) -> None:
        """A reassembled tunnel packet: checked as :meth:`decapsulate` does, then written
        (:meth:`_deliver_super`)."""
        if not self._inner_ok(inner):
            return
        key = source + destination + inner[8:24]
        if key not in self._decap_cache:
            if not self._accepts(IPv6Address(source), IPv6Address(destination),
                                 IPv6Address(inner[8:24])):
                return
            if len(self._decap_cache) >= FAST_CACHE_SIZE:
                self._decap_cache.clear()
            self._decap_cache.add(key)
        self._deliver_super(inner)

    def snapshot(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "device": self.tun.name,
            "mtu": self.mtu,
            "hop_limit": self.hop_limit,
            "routes": [route_json(self.routes[h]) for h in sorted(self.routes)],
            "kernel_routes": sorted(str(n) for n in self._kernel_routes),
            "proxy_nd": [[str(a), i] for a, i in sorted(self.proxied)],
            "prefixes": [str(p) for p in sorted(self.prefixes)],
            "held": self._held_json(),
            "counters": dict(self.counters),
            "device_counters": dict(self.tun.counters),
            "super_packets": self.super_packets,
            "tunnel_socket_counters": dict(self.tunnel_socket.counters)
            if self.tunnel_socket is not None else {},
            "kernel_sum_counters": dict(self.kernel_sum.counters)
            if self.kernel_sum is not None else {},
        }


@implementer(IMobileTunnel, IStartStop, IDecapsulator, IHomeAnnouncer, ISnapshot)
class MobileTunnel(MobileRouting, _Base):
    """The mobile node's (or mobile router's) end of the bidirectional tunnel.

    :meth:`set_endpoint` (re)points it: the home address is put on the TUN (``nodad``), a
    policy rule sends everything sourced from the home address and from ``prefixes`` to routing
    table ``table`` whose default route is the TUN; packets read there are encapsulated from the
    care-of address to the home agent. :meth:`decapsulate` accepts tunnelled packets to the
    care-of address from the home agent, or from one of the other ``home_agents`` given to
    :meth:`set_endpoint` (draft 3.2: without a home link every home agent forwards from its
    Binding Cache Copies, so the node's traffic may arrive through any of them), whose inner
    destination is the home address or inside the prefixes. :meth:`clear` removes it all (back
    home, or deregistered).

    ``steer_mark`` (an integer, or None to leave applications alone) makes the home address the
    source of applications that do not choose one: while the tunnel is up, every packet not
    marked ``steer_mark`` (the transport's own, see :attr:`haha.io.raw.RawTransport.mark`)
    that no specific route of the main table claims goes to ``table`` (rules
    ``rule_priority + 1`` and ``+ 2``, :meth:`~haha.backends.netsys.Pyroute2Netlink.steer_add`),
    whose only route leads into the TUN; the kernel then picks the address of the TUN, the home
    address, as the source (RFC 6724 rule 5, prefer the outgoing interface), and the packet is
    tunnelled. Without it, such applications send from the care-of address, outside the
    tunnel.
    """

    def __init__(self, reactor: Any, transport: Any, tun_name: str = "hahamn%d",
                 mtu: int = DEFAULT_MTU, hop_limit: int = DEFAULT_HOP_LIMIT,
                 table: Optional[int] = 0x4D4E, rule_priority: int = 1000, netlink: Any = None,
                 system: Any = None, tun: Any = None, router_flag: bool = False,
                 steer_mark: Optional[int] = None, super_packets: bool = False) -> None:
        super().__init__(reactor, transport, tun_name, mtu, hop_limit, netlink, system, tun,
                         super_packets=super_packets)
        self.table = check_table(table)
        self.rule_priority = rule_priority
        self.router_flag = router_flag  # a mobile router's home Neighbour Advertisement has R
        self.steer_mark = steer_mark
        self.home_address: Optional[IPv6Address] = None
        self.care_of: Optional[IPv6Address] = None
        self.home_agent: Optional[IPv6Address] = None
        self.home_agents: FrozenSet[IPv6Address] = frozenset()
        # The node's own mobile network prefixes (not LinkDuties' advertised prefixes, which a
        # mobile tunnel never has).
        self.prefixes: Tuple[IPv6Network, ...] = ()  # type: ignore[assignment]

    def start(self) -> None:
        """Remove the policy rules an earlier run left (``kill -9``: the TUN, its address and
        the table's default route go with the process, the rules stay), open the TUN."""
        if self.running:
            raise RuntimeError("mobile tunnel already started")
        self._reclaim_rules()
        self._start_tun()
        self.running = True

    def stop(self) -> None:
        self.clear()
        if self.running:
            self._tunnel_hook(None)
        self._stop_super()
        self.tun.stop()
        self.running = False

    def set_endpoint(self, home_address: IPv6Address, care_of: IPv6Address,
                     home_agent: IPv6Address, prefixes: Iterable[IPv6Network] = (),
                     home_agents: Iterable[IPv6Address] = ()) -> None:
        """Tunnel ``home_address`` (and ``prefixes``) between ``care_of`` and ``home_agent``;
        replaces any previous endpoint. Tunnelled packets from the other ``home_agents`` (the
        node's Home Agent list) are accepted too; ours go to ``home_agent`` only."""
        agents, nets = check_endpoint(home_address, care_of, home_agent, prefixes, home_agents)
        if not self.running:
            raise RuntimeError("mobile tunnel not started")
        new_sources = {IPv6Network(home_address)} | set(nets)
        old_sources = self._sources()
        if self.home_address is not None and self.home_address != home_address:
            self._nl("remove home address", self.netlink.address_delete,
                     f"{self.home_address}/128", self.tun.name)
        self._delete_rules(old_sources - new_sources)
        if self.home_address != home_address:
            self._nl("add home address", self.netlink.address_add, f"{home_address}/128",
                     self.tun.name)
        self._add_rules(new_sources - old_sources)
        if self.home_address is None:
            self._nl("default route into the tunnel", self.netlink.route_replace,
                     IPv6Network("::/0"), dev=self.tun.name, table=self.table,
                     proto=RTPROT_HAHA)
            self._steer(True)
        self.home_address, self.care_of, self.home_agent = home_address, care_of, home_agent
        self.home_agents = agents
        self.prefixes = nets
        self._fast_reset()

    def clear(self) -> None:
        """Remove the endpoint (rules, home address, tunnel route). Idempotent."""
        if self.home_address is None:
            return
        self._delete_rules(self._sources())
        self._steer(False)
        self._nl("remove tunnel route", self.netlink.route_delete, IPv6Network("::/0"),
                 dev=self.tun.name, table=self.table, proto=RTPROT_HAHA)
        self._nl("remove home address", self.netlink.address_delete, f"{self.home_address}/128",
                 self.tun.name)
        self.home_address = self.care_of = self.home_agent = None
        self.home_agents = frozenset()
        self.prefixes = ()
        self._fast_reset()

    def _from_tun(self, packet: bytes) -> None:
        if len(packet) < 40 or packet[0] >> 4 != 6:
            self.counters["tun_malformed"] += 1
            return
        if self.home_address is None:
            self.counters["tun_no_endpoint"] += 1
            return
        key = packet[8:24]
        addresses = self._encap_cache.get(key)
        if addresses is None:
            src = IPv6Address(key)
            if src != self.home_address and not _in_any(src, self.prefixes):
                self.counters["tun_foreign_source"] += 1
                return
            # set_endpoint sets all three together (home_address is checked above)
            assert self.care_of is not None and self.home_agent is not None
            addresses = self.care_of.packed + self.home_agent.packed
            if len(self._encap_cache) >= FAST_CACHE_SIZE:
                self._encap_cache.clear()
            self._encap_cache[key] = addresses
        self._send_tunnelled(packet, addresses)

    def decapsulate(self, packet: bytes) -> bool:
        """Inbound IPv6-in-IPv6 from a home agent: write the inner packet to the TUN when the
        outer addresses are (home agent -> care-of), the home agent being ours or one of
        ``home_agents``, and the inner destination is ours. Addresses already accepted once
        (and no extension headers) take a fast path."""
        if self._decap_cache:
            end = self._simple_tunnelled(packet)
            if end is not None and packet[8:40] + packet[64:80] in self._decap_cache:
                return self._deliver(memoryview(packet)[40:end])
        parsed = self._parse_tunnelled(packet)
        if parsed is None:
            return False
        outer, (_, inner_dst) = parsed
        if not self._accepts(outer.src, outer.dst, inner_dst):
            return False
        if not self._deliver(outer.payload):
            return False
        self._remember_accepted(packet, packet[8:40] + packet[64:80])
        return True

    def _accepts(self, outer_src: IPv6Address, outer_dst: IPv6Address,
                 inner_dst: IPv6Address) -> bool:
        """From our home agent (or one of the node's) to the care-of address, for the home
        address or a prefix of ours; the rest counted by reason."""
        if self.home_address is None or outer_dst != self.care_of or (
                outer_src != self.home_agent and outer_src not in self.home_agents):
            self.counters["decap_unknown_peer"] += 1
            return False
        if inner_dst != self.home_address and not _in_any(inner_dst, self.prefixes):
            self.counters["decap_wrong_destination"] += 1
            return False
        return True

    def _gso_from_tun(self, frame: bytes) -> bool:
        """A TCP super-packet from the home address (not from a mobile network's prefix)
        goes whole to the home agent."""
        if not self._whole_tcp(frame) or self.home_address is None:
            return False
        addresses = self._super_cache.get(b"")
        if addresses is None:
            assert self.care_of is not None and self.home_agent is not None
            addresses = self._super_cache[b""] = self.care_of.packed + self.home_agent.packed
        if frame[18:34] != self.home_address.packed:
            return False
        return self._send_super(frame, addresses)

    def _from_tunnel_socket(self, source: bytes, destination: bytes, inner: bytes) -> None:
        """A reassembled tunnel packet: checked as :meth:`decapsulate` does, then written
        (:meth:`_deliver_super`)."""
        if not self._inner_ok(inner):
            return
        key = source + destination + inner[24:40]
        if key not in self._decap_cache:
            if not self._accepts(IPv6Address(source), IPv6Address(destination),
                                 IPv6Address(inner[24:40])):
                return
            if len(self._decap_cache) >= FAST_CACHE_SIZE:
                self._decap_cache.clear()
            self._decap_cache.add(key)
        self._deliver_super(inner)

    def snapshot(self) -> Dict[str, Any]:
        return {
            "device": self.tun.name,
            "home_address": str(self.home_address) if self.home_address else None,
            "care_of": str(self.care_of) if self.care_of else None,
            "home_agent": str(self.home_agent) if self.home_agent else None,
            "home_agents": sorted(str(a) for a in self.home_agents),
            "prefixes": [str(p) for p in self.prefixes],
            "table": self.table,
            "counters": dict(self.counters),
            "device_counters": dict(self.tun.counters),
            "super_packets": self.super_packets,
            "tunnel_socket_counters": dict(self.tunnel_socket.counters)
            if self.tunnel_socket is not None else {},
            "kernel_sum_counters": dict(self.kernel_sum.counters)
            if self.kernel_sum is not None else {},
        }


def options_of(options: Any) -> Dict[str, Any]:
    """The keyword arguments ``[backend:tun]`` gives (shared by :class:`TunBackend` and a mobile
    node's :class:`MobileTunnel`): ``device``, ``mtu``, ``hop-limit``, ``table``."""
    return {
        "tun_name": options.get_str("device", "haha%d"),
        "mtu": options.get_int("mtu", DEFAULT_MTU, minimum=1280, maximum=65535),
        "hop_limit": options.get_int("hop-limit", DEFAULT_HOP_LIMIT, minimum=1, maximum=255),
        "table": options.get_int("table", None, minimum=1, maximum=0xFFFFFFFE),
        "super_packets": options.get_bool("super-packets", False),
    }


def build(context: BackendContext) -> TunBackend:
    """The ``tun`` backend plugin's factory: a complete :class:`TunBackend` from a
    :class:`~haha.backends.context.BackendContext` (its ``[backend:tun]`` options, reactor,
    transport, ownership and OS seams). Nothing touches the system until ``start()``."""
    options = context.options
    kw = options_of(options)
    return TunBackend(context.reactor, context.transport,
                      enable_forwarding=options.get_bool("forwarding", True),
                      router_flag=options.get_bool("router-flag", False),
                      netlink=context.netlink, system=context.system,
                      ownership=context.ownership, log=context.log, **kw)
