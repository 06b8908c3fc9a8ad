"""The contracts between haha's layers.

Every seam where the operating system, the network or a third party plugs in is a small
zope.interface here. Built-in implementations declare ``@implementer`` and are checked with
``verifyObject`` in the tests; plugins are checked by :mod:`haha.plugins` when they are loaded.

Addresses are :class:`ipaddress.IPv6Address`, prefixes :class:`ipaddress.IPv6Network`, packets
``bytes`` holding a complete IPv6 packet (fixed header, extension headers, upper layer).
"""

from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


class ICounterSource(Interface):
    """Optional: an object whose counters the daemon reports (``haha-ctl counters``, metrics)."""

    counters = Attribute("A mapping of counter name to int.")


class IMobilityTransport(ICounterSource):
    """The packet I/O seam: complete IPv6 packets in and out.

    Implementations: raw IPv6 sockets plus an AF_PACKET receiver (``haha.io.raw``), IPv6 packets
    carried in UDP datagrams between loopback ports for unprivileged runs (``haha.io.udp``), and
    an in-memory network for tests and embedders (``haha.testing``).

    Outbound packets are already complete (extension headers, ESP, checksums): the transport only
    delivers them. Inbound, it hands every packet that may concern mobility signalling or the
    tunnel (Mobility Header, ESP, ICMPv6 types 144-147 and Router Advertisements, IPv6-in-IPv6) to
    the receiver; the receiver parses and drops what it does not want. Errors of the operating
    system are logged and counted by the transport, never raised to the caller.
    """

    def start(receiver: Callable[[bytes], Any]) -> Any:
        """Begin delivering inbound packets to ``receiver(packet: bytes)``."""

    def send(packet: bytes, interface: Optional[str] = None) -> Any:
        """Send one complete IPv6 packet (``bytes``). Never raises for network errors.
        ``interface`` names the link for link-local and multicast destinations (transports
        without interfaces ignore it)."""

    def stop() -> Any:
        """Stop receiving and release sockets. May return a Deferred."""

    counters = Attribute("A mapping of counter name to int (sent, received, send_errors, ...).")


class IForwardingBackend(Interface):
    """The forwarding plane: what the kernel (or user space) must do for the bindings.

    The core computes the duties per binding (tunnel or not, proxy ND or not, prefix routes) and
    calls these methods with exactly what to install and remove. ``install`` is idempotent: calling
    it again for the same home address replaces (refreshes) the previous state.
    """

    name = Attribute("The backend's configuration name, e.g. 'netlink', 'tun', 'null'.")

    def capabilities() -> FrozenSet[str]:
        """A frozenset of strings among 'tunnel', 'proxy-nd', 'prefix-route', 'userspace'."""

    def start() -> Any:
        """Prepare devices and tables. May return a Deferred; raise on an unusable system."""

    def stop() -> Any:
        """Remove everything this backend installed. May return a Deferred."""

    def install(route: Any) -> None:
        """Forward packets for ``route`` (a :class:`haha.core.duties.ForwardingRoute`): the home
        address and mobile network prefixes through a bidirectional tunnel between
        ``route.local`` and ``route.care_of``."""

    def remove(home_address: IPv6Address) -> None:
        """Stop forwarding for ``home_address`` and its prefixes; unknown addresses are ignored."""

    def proxy_nd_start(address: IPv6Address, interface: Any) -> None:
        """Defend ``address`` on the home link ``interface`` with proxy Neighbour Discovery and
        send an unsolicited Neighbour Advertisement for it."""

    def proxy_nd_stop(address: IPv6Address, interface: Any) -> None:
        """Stop defending ``address``."""

    def advertise_prefix(prefix: IPv6Network) -> None:
        """Attract traffic for ``prefix`` (the aggregated home prefix, configurations without a
        home link or with a HAHA address)."""

    def withdraw_prefix(prefix: IPv6Network) -> None:
        """Stop attracting traffic for ``prefix``."""

    def snapshot() -> Any:
        """A JSON-serialisable description of what is installed now (for the control interface
        and tests)."""


class IPeerListener(Interface):
    """What a discovery strategy reports to."""

    def peer_appeared(address: Any, source: Any) -> Any:
        """``address`` (IPv6Address) may be a home agent; ``source`` names the strategy."""

    def peer_disappeared(address: Any, source: Any) -> Any:
        """``address`` is no longer reported by ``source``."""


class IPeerDiscovery(Interface):
    """A way to learn candidate peer home agents.

    Discovery only proposes: every peer must still be on the configured authorisation list and
    have keys before the home agent talks to it ("as like BGP", draft section 1).
    """

    name = Attribute("The strategy's configuration name, e.g. 'static', 'dns', 'link'.")

    def start(listener: Any) -> Any:
        """Begin reporting peers to ``listener`` (an :class:`IPeerListener`)."""

    def stop() -> Any:
        """Stop reporting. May return a Deferred."""


class ISecurityAssociations(ICounterSource):
    """IPsec ESP transport mode (RFC 4303) for signalling, in user space.

    ``protect`` and ``unprotect`` work on the part of the packet after the IPv6 header and the
    extension headers that stay in clear (Home Address option, type 2 routing header).
    """

    def protect(peer: Any, next_header: Any, payload: Any, local: Any = None) -> Any:
        """Return the ESP header, encrypted ``payload`` and trailer for the outbound SA towards
        ``peer`` (a home agent's address or a mobile node's home address); with ``local``
        (address take-over: the address this home agent speaks for) the SA of that pair when
        there is one. Raise :class:`haha.security.SecurityError` when there is no usable SA."""

    def unprotect(source: Any, esp: Any) -> Any:
        """Authenticate and decrypt ``esp`` (bytes starting at the SPI). Return
        ``(peer, next_header, payload)`` where ``peer`` is the identity bound to the SA. Raise
        :class:`haha.security.SecurityError` (with a ``reason``) for anything that must be
        dropped: unknown SPI, replay, authentication failure, bad padding, wrong source.
        ``source`` is the address the packet speaks for: the home address of a Home Address
        option when there is one (a mobile node's SA is bound to its home address, not its
        care-of address), else the IPv6 source -- ``haha.wire.ipv6.Packet.source``."""

    def has_peer(peer: Any) -> Any:
        """Whether an outbound SA exists for ``peer``."""

    counters = Attribute("A mapping of drop reason to count.")


class IBackendPlugin(IPlugin):
    """A forwarding backend that a configuration selects by name (``backend = NAME``)."""

    name = Attribute("The name used in the configuration file.")
    description = Attribute("One line for listings and error messages.")

    def build(context: Any) -> Any:
        """Return an :class:`IForwardingBackend`, complete: ``context`` (a
        :class:`haha.backends.context.BackendContext`) holds everything the daemon gives a
        backend (its configuration section, the reactor, the transport, the ownership of what
        it installs in the kernel, the OS seams), and nothing is set on the backend afterwards.
        (A plugin whose ``build`` takes ``(options, reactor)``, the signature before the
        context, still loads, with a deprecation warning: :mod:`haha.plugins`.)"""


class IDiscoveryPlugin(IPlugin):
    """A peer-discovery strategy that a configuration selects by name (``discovery = NAME``)."""

    name = Attribute("The name used in the configuration file.")
    description = Attribute("One line for listings and error messages.")

    def build(options: Any, reactor: Any, config: Any) -> Any:
        """Return an :class:`IPeerDiscovery`. ``options`` is the strategy's own configuration
        section, ``config`` the whole home agent configuration."""


class IRouterAdvertisementListener(Interface):
    """Optional: a discovery strategy that wants the Router Advertisements the daemon receives on
    the home link (RFC 6275 10.5.1: home agents on one link learn each other from them)."""

    def router_advertisement(source: Any, advertisement: Any) -> Any:
        """``advertisement`` (a :class:`haha.wire.icmpv6.RouterAdvertisement`) arrived from the
        link-local ``source``."""


class IControllable(Interface):
    """What the operator interface (``haha-ctl``, the metrics endpoint) may ask of a daemon.

    Every method returns JSON-serialisable data (or a Deferred firing with it) and raises
    ``ValueError`` with an operator-readable message for a bad request.
    """

    def status() -> Any:
        """A mapping describing the daemon (role, addresses, state, uptime, ...)."""

    def bindings() -> Any:
        """A list of mappings, one per binding (primary and copies for a home agent)."""

    def peers() -> Any:
        """A list of mappings, one per known peer home agent (home agents only)."""

    def counters() -> Any:
        """A flat mapping of counter name to number (for metrics)."""

    def command(name: Any, arguments: Any) -> Any:
        """Run an operator command (e.g. 'switch', 'drain'); ``arguments`` is a mapping."""


# -- optional capabilities -------------------------------------------------------------------
#
# What a collaborator may do besides its required interface. The daemon asks with
# ``providedBy`` (never ``getattr``/``hasattr``), so an object that has such a method by accident
# is not called, and one that declares it is checked by ``verifyObject`` in the tests.


class IAnycastJoin(Interface):
    """A transport that can make this host a member of an anycast address (the raw transport:
    the Home-Agents anycast address for DHAAD, RFC 6275 10.5)."""

    def join_anycast(address: IPv6Address, interface: str) -> None:
        """Join anycast ``address`` on ``interface`` until the transport stops. Raises
        ``OSError`` when the kernel refuses."""

    def leave_anycast(address: IPv6Address, interface: str) -> None:
        """Leave what :meth:`join_anycast` joined (no-op when not joined)."""


class IKernelTunnels(Interface):
    """A transport that must be told to leave IPv6-in-IPv6 to the kernel's tunnels (the raw
    transport's guard drops it otherwise; the ``netlink`` backend asks at start)."""

    def leave_tunnels_to_kernel(enabled: bool = True) -> None:
        """Stop (``enabled``) or resume taking IPv6-in-IPv6 from the kernel."""


class IDecapsulator(Interface):
    """What takes inbound IPv6-in-IPv6 packets off the transport (the ``tun`` backend, the
    mobile node's tunnel); without one they are dropped and counted."""

    def decapsulate(packet: bytes) -> bool:
        """Take one complete IPv6 packet whose payload is IPv6 (``bytes``); True when the
        inner packet was delivered, False when it was dropped (counted by reason)."""


class IAddressHolder(Interface):
    """A backend that can answer for another home agent's address (address take-over,
    :class:`haha.core.effects.HoldAddress`); without it the duty is counted as unsupported."""

    def hold_address(address: IPv6Address, interface: Optional[str]) -> None:
        """Answer for ``address`` on ``interface`` (None: as a redistributable route)."""

    def release_address(address: IPv6Address, interface: Optional[str] = None) -> None:
        """Stop answering for ``address`` (unknown addresses are ignored)."""


class IStartStop(Interface):
    """Something the daemon starts with it and stops with it (a mobile node's tunnel)."""

    def start() -> Any:
        """Prepare; raise when the system cannot. May return a Deferred."""

    def stop() -> Any:
        """Release everything. May return a Deferred."""


class ISnapshot(Interface):
    """Optional: a mobile node's tunnel that describes what it installed (``haha-ctl tunnel``)."""

    def snapshot() -> Dict[str, Any]:
        """A JSON-serialisable description of its end points, links and counters."""


class IMobileTunnel(Interface):
    """A mobile node's end of the bidirectional tunnel (RFC 6275 11.3.1; the daemon sets and
    clears its end points as the node registers and returns home)."""

    def set_endpoint(home_address: IPv6Address, care_of: IPv6Address, home_agent: IPv6Address,
                     prefixes: Iterable[IPv6Network] = (),
                     home_agents: Iterable[IPv6Address] = ()) -> None:
        """Tunnel ``home_address`` (and ``prefixes``) between ``care_of`` and ``home_agent``,
        accepting tunnelled packets from every one of ``home_agents`` too."""

    def clear() -> None:
        """Remove the end points (back home, or deregistered)."""


class IHomeAnnouncer(Interface):
    """A mobile node's tunnel that can announce the home address on the home link once the
    node is back (RFC 6275 11.5.4)."""

    def announce_home(home_address: IPv6Address, interface: str) -> Optional[bytes]:
        """Send one unsolicited Neighbour Advertisement (Override set) for ``home_address`` on
        ``interface``; return the packet sent, or None when it could not be sent."""


class ISequencePersistence(Interface):
    """A security association database that keeps its ESP sequence numbers on disk."""

    sequence_store = Attribute("The :class:`haha.security.seqstore.SequenceStore`, or None.")


class IKnownSpi(Interface):
    """A security association database that can tell, before authenticating, whether an ESP
    packet names one of its SPIs (admission: unknown SPIs take the unauthenticated budget)."""

    def knows(esp: Any) -> bool:
        """Whether ``esp`` (bytes starting at the SPI) names an inbound SA."""


class ITieredLimiter(Interface):
    """A rate limiter with separate budgets for unauthenticated input, authenticated peers and
    answers to unauthenticated input (:class:`haha.security.admission.Admission`; a plain
    :class:`haha.security.ratelimit.RateLimiter` has only ``allow(source, now)``)."""

    def unauthenticated(source: Any, now: float) -> bool:
        """Whether one more unauthenticated packet from ``source`` fits the budget."""

    def authenticated(peer: Any, now: float) -> bool:
        """Whether one more authenticated packet from ``peer`` fits its budget."""

    def answer(now: float) -> bool:
        """Whether one more answer to unauthenticated input fits the global budget."""


# -- operating-system seams ------------------------------------------------------------------
#
# Every socket, TUN, nft and netlink call goes through one of these (the real object and its
# in-memory twin: ``haha.io.system`` and ``haha.backends.netsys``). Tests check both with
# ``verifyObject`` and the exact parameter lists, so a fake cannot drift from the real thing.


class IPacketSocket(Interface):
    """What :meth:`ISystem.packet_socket` returns: a non-blocking ``AF_PACKET`` socket."""

    def fileno() -> int:
        """The descriptor (the reactor watches it)."""

    def recvfrom(n: int) -> Tuple[bytes, Any]:
        """``(data, address)`` of one queued frame; ``BlockingIOError`` when none."""

    def recvmsg(n: int, ancbufsize: int = 0) -> Tuple[bytes, Any, int, Any]:
        """``(data, ancillary, flags, address)``: one frame with its control messages (the
        ``PACKET_AUXDATA`` status when enabled); ``BlockingIOError`` when none."""

    def recvmsg_into(buffers: Any, ancbufsize: int = 0) -> Tuple[int, Any, int, Any]:
        """As :meth:`recvmsg`, the frame written into ``buffers`` (a list of writable buffers,
        filled in order): ``(length, ancillary, flags, address)``."""

    def setsockopt(level: int, option: int, value: Any) -> None:
        """Set a socket option (``PACKET_AUXDATA``)."""

    def close() -> None:
        """Close it."""


class IRawSocket(Interface):
    """What :meth:`ISystem.raw_socket` returns: a non-blocking raw IPv6 socket."""

    def fileno() -> int:
        """The descriptor."""

    def sendto(data: bytes, address: Any) -> int:
        """Send a complete IPv6 packet; returns the octets sent, raises ``OSError``."""

    def sendmsg(buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
        """Send one packet gathered from ``buffers`` (an outer header and the packet it
        carries, without joining them); returns the octets sent, raises ``OSError``."""

    def close() -> None:
        """Close it."""


class ITunFile(Interface):
    """The first item :meth:`ISystem.open_tun` returns: a non-blocking TUN queue."""

    def fileno() -> int:
        """The descriptor."""

    def read(n: int) -> bytes:
        """One packet; ``BlockingIOError`` when none."""

    def write(data: bytes) -> int:
        """Write one packet; returns the octets written, raises ``OSError``."""

    def writev(buffers: Any) -> int:
        """Write one packet gathered from ``buffers``; returns the octets written."""

    def close() -> None:
        """Close it (the device goes with the last descriptor)."""


class ITunnelFastPath(Interface):
    """A transport that carries IPv6-in-IPv6 for the user-space tunnel without a detour
    (:class:`haha.io.raw.RawTransport`): tunnelled packets handed straight to the backend,
    and an outer header sent with its packet without joining them."""

    def set_tunnel_receiver(receiver: Optional[Callable[[bytes], Any]]) -> None:
        """Hand every arriving IPv6-in-IPv6 packet to ``receiver`` (None: to the daemon)."""

    def send_encapsulated(header: bytes, payload: Any) -> None:
        """Send the 40-octet outer ``header`` followed by ``payload`` as one packet."""


class ISystem(Interface):
    """The operating-system seam of :mod:`haha.io`: sockets, TUN devices, nft
    (:class:`haha.io.system.LinuxSystem`, :class:`haha.io.system.FakeSystem`)."""

    def packet_socket(interface: Optional[str] = None) -> Any:
        """A non-blocking :class:`IPacketSocket` for IPv6 on ``interface`` (None: all)."""

    def set_receive_buffer(sock: Any, size: int, log: Any) -> Optional[int]:
        """Ask for a ``size``-octet receive buffer; returns the size granted or None."""

    def attach_filter(sock: Any, program: Any) -> None:
        """Attach a classic BPF ``program`` (:mod:`haha.io.bpf`) to ``sock``."""

    def raw_socket() -> Any:
        """A non-blocking :class:`IRawSocket` (``IPPROTO_RAW``: whole IPv6 packets)."""

    def set_mark(sock: Any, mark: int) -> None:
        """``SO_MARK``: packets sent through ``sock`` carry firewall mark ``mark``."""

    def interface_index(name: str) -> int:
        """The index of interface ``name``; ``OSError`` when there is none."""

    def join_anycast(sock: Any, address: IPv6Address, interface: str) -> None:
        """Make ``address`` anycast on ``interface`` while ``sock`` is open."""

    def leave_anycast(sock: Any, address: IPv6Address, interface: str) -> None:
        """Undo :meth:`join_anycast`."""

    def run_nft(script: str) -> str:
        """Run an nft script; ``haha.io.system.NftError`` with nft's complaint."""

    def list_nft_tables() -> List[Tuple[str, str]]:
        """``[(family, name)]`` of the nft tables that exist."""

    def open_tun(name: str, vnet_hdr: bool = False) -> Tuple[Any, str]:
        """``(ITunFile, actual_name)`` of TUN device ``name`` (``%d`` allowed); with
        ``vnet_hdr`` every packet carries a ``virtio_net_hdr`` (``IFF_VNET_HDR``)."""

    def set_tun_offload(tun: Any, flags: int) -> None:
        """``TUNSETOFFLOAD``: the offloads (``TUN_F_*``) user space accepts on reads from a
        TUN opened with ``vnet_hdr``."""


class INetlink(Interface):
    """The netlink seam of the forwarding backends: links, routes, rules, addresses, proxy
    neighbour entries, ip6tnl tunnels, sysctls (:class:`haha.backends.netsys.Pyroute2Netlink`,
    :class:`haha.backends.netsys.FakeNetlink`). Failures raise
    :class:`haha.backends.netsys.NetlinkFailure` naming the operation."""

    def close() -> None:
        """Release the netlink socket."""

    def index(name: str) -> int:
        """The index of link ``name``."""

    def link_info(name: str) -> Dict[str, Any]:
        """``{"index", "mac", "mtu", "up", "addresses"}`` of link ``name``."""

    def link_stats(name: str) -> Dict[str, int]:
        """``{"rx_packets", "tx_packets"}`` of link ``name``."""

    def link_set(name: str, up: Optional[bool] = None, mtu: Optional[int] = None) -> None:
        """Bring link ``name`` up or down and/or set its MTU."""

    def route_replace(dst: Any, dev: Optional[str] = None, table: Optional[int] = None,
                      metric: Optional[int] = None, kind: str = "unicast",
                      proto: Optional[int] = None) -> None:
        """Add or replace a route."""

    def route_delete(dst: Any, dev: Optional[str] = None, table: Optional[int] = None,
                     metric: Optional[int] = None, kind: str = "unicast",
                     proto: Optional[int] = None) -> None:
        """Delete a route."""

    def neigh_proxy_add(address: IPv6Address, dev: str, proto: Optional[int] = None) -> None:
        """Add a proxy neighbour entry."""

    def neigh_proxy_delete(address: IPv6Address, dev: str) -> None:
        """Delete a proxy neighbour entry."""

    def neigh_proxy_dump() -> List[Tuple[IPv6Address, str, Optional[int]]]:
        """``[(address, dev, proto)]`` of every proxy neighbour entry."""

    def route_dump(table: Optional[int] = None,
                   proto: Optional[int] = None) -> List[Dict[str, Any]]:
        """The routes of ``table`` (None: main) tagged ``proto`` (None: any)."""

    def rule_dump() -> List[Tuple[IPv6Network, int, int, Optional[int]]]:
        """``[(src, table, priority, proto)]`` of the source policy rules."""

    def ip6tnl_dump() -> Dict[str, Tuple[IPv6Address, IPv6Address]]:
        """``{name: (local, remote)}`` of the ip6tnl links."""

    def address_add(interface: str, dev: str) -> None:
        """Add address ``interface`` (``"addr/len"``) to ``dev`` without DAD."""

    def address_delete(interface: str, dev: str) -> None:
        """Remove address ``interface`` from ``dev``."""

    def rule_add(src: IPv6Network, table: int, priority: int, proto: Optional[int] = None) -> None:
        """Add a policy rule: from ``src`` look up ``table``."""

    def rule_delete(src: IPv6Network, table: int, priority: int) -> None:
        """Delete that policy rule."""

    def steer_add(table: int, priority: int, mark: int, proto: Optional[int] = None) -> None:
        """Add the pair of rules steering unmarked traffic into ``table``."""

    def steer_delete(table: int, priority: int, mark: int) -> None:
        """Delete them."""

    def steer_dump() -> List[Tuple[int, int, int, Optional[int]]]:
        """``[(table, priority, mark, proto)]`` of the steering rules."""

    def ip6tnl_add(name: str, local: Any, remote: Any, hop_limit: Optional[int] = None,
                   fwmark: Optional[int] = None) -> None:
        """Create ip6tnl link ``name`` (mode ip6ip6) between ``local`` and ``remote`` (outer
        Hop Limit ``hop_limit``, None: the kernel's; outer packets routed with firewall mark
        ``fwmark``, None: none)."""

    def link_delete(name: str) -> None:
        """Delete link ``name``."""

    def sysctl_get(key: str) -> str:
        """The value of sysctl ``key`` (dotted) as text."""

    def sysctl_set(key: str, value: str) -> None:
        """Set sysctl ``key`` to ``value``."""


def provide_what_inner_provides(wrapper: Any, inner: Any, *interfaces: Any) -> Any:
    """Declare on ``wrapper`` (an object that forwards to ``inner``, e.g. through
    ``__getattr__``) each of the optional capabilities ``interfaces`` that ``inner`` provides,
    so that ``providedBy`` answers for the wrapper as it would for what it wraps. Returns
    ``wrapper``. (A wrapper that forwards only some methods should declare only those.)"""
    from zope.interface import alsoProvides

    wanted = [i for i in interfaces if i.providedBy(inner)]
    if wanted:
        alsoProvides(wrapper, *wanted)
    return wrapper
